// Apollo Client over graphql-ws: GraphQLWsLink on one WebSocket, the token in connection_init.
import { ApolloClient, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import type { Observable } from 'rxjs';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { PositionsDocument, PriceUpdatesDocument, RenewSessionDocument } from './generated/graphql.js';
import { after, done, events, fail, keepCursor, market, print } from './settings.js';
import { freshToken, isExpiryNotice, renewed, tokenFile } from './settings.js';
import { stopIfTokenRefused, token, wsUrl } from './settings.js';

const wsClient = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  // Called on every (re)connect: return a fresh token here when yours can expire.
  connectionParams: async () => ({ authorization: `Bearer ${token}` }),
  on: {
    closed: stopIfTokenRefused,
    // The expiry notice: renew on the same socket, the subscriptions untouched.
    ping: (received, payload) => {
      if (received && tokenFile && isExpiryNotice(payload)) renew().catch(fail);
    },
  },
});
// Every operation, the renewal mutation included, goes over the one WebSocket (GraphQLWsLink):
// renewSession must reach the connection whose credentials it replaces. With an HTTP link beside
// it, route RenewSession to this link with split().
const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });

async function renew(): Promise<void> {
  const { data, error } = await client.mutate({
    mutation: RenewSessionDocument,
    variables: { token: freshToken() },
  });
  if (error) fail(error);
  renewed(data?.renewSession);
}

/** Hands the data of the first `events` results to onData, then unsubscribes. */
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
await wsClient.dispose();
done();
