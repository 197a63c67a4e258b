// Apollo Client over HTTP: HttpLink runs each subscription as one POST whose response is
// multipart/mixed, the token in the Authorization header. No WebSocket.
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import type { Observable } from 'rxjs';
import { PositionsDocument, PriceUpdatesDocument } from './generated/graphql.js';
import { after, done, events, fail, keepCursor, market, print, token, url } from './settings.js';

const client = new ApolloClient({
  link: new HttpLink({ uri: url, headers: { authorization: `Bearer ${token}` } }),
  cache: new InMemoryCache(),
});

/** Hands the data of the first `events` results to onData, then unsubscribes (ends the POST). */
function take<T>(results: Observable<ApolloClient.SubscribeResult<T>>, onData: (data: T) => void) {
  return new Promise<void>((resolve, reject) => {
    let seen = 0;
    const subscription = results.subscribe({
      next: ({ data, error }) => {
        if (error || !data) return reject(error);
        onData(data);
        if (++seen === events) resolve(subscription.unsubscribe());
      },
      error: reject,
      complete: () => reject(new Error('the server ended the subscription')),
    });
  });
}

// The documents are typed (src/generated/graphql.ts): so are `variables` and `data`.
await Promise.all([
  take(
    client.subscribe({ query: PriceUpdatesDocument, variables: { market }, fetchPolicy: 'no-cache' }),
    (data) => print('priceUpdates', data.priceUpdates),
  ),
  take(
    client.subscribe({ query: PositionsDocument, variables: { after }, fetchPolicy: 'no-cache' }),
    (data) => {
      print('positions', data.positions);
      keepCursor(data.positions.cursor); // to resume right after this event
    },
  ),
]).catch(fail);
done();
