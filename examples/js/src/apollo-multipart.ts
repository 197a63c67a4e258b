// Apollo Client over HTTP: HttpLink runs subscriptions as multipart/mixed responses, one POST per
// subscription, the token in the Authorization header. No WebSocket.
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import { PositionsDocument, PriceUpdatesDocument } from './generated/graphql.js';
import { after, events, fail, market, print, token, url } from './settings.js';

const client = new ApolloClient({
  link: new HttpLink({ uri: url, headers: { authorization: `Bearer ${token}` } }),
  cache: new InMemoryCache(),
});

const prices = new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client
    .subscribe({ query: PriceUpdatesDocument, variables: { market }, fetchPolicy: 'no-cache' })
    .subscribe({
      next: ({ data, error }) => {
        if (error || !data) return reject(error);
        print('priceUpdates', data.priceUpdates);
        if (++seen === events) resolve(subscription.unsubscribe()); // aborts the request
      },
      error: reject,
    });
});

const positions = new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client
    .subscribe({ query: PositionsDocument, variables: { after }, fetchPolicy: 'no-cache' })
    .subscribe({
      next: ({ data, error }) => {
        if (error || !data) return reject(error);
        // Keep data.positions.cursor: subscribing again with it as `after` resumes right after it.
        print('positions', data.positions);
        if (++seen === events) resolve(subscription.unsubscribe());
      },
      error: reject,
    });
});

await Promise.all([prices, positions]).catch(fail);
