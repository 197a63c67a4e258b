// Apollo Client over graphql-ws: GraphQLWsLink on one WebSocket, the token in connection_init.
import { ApolloClient, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { PositionsDocument, PriceUpdatesDocument } from './generated/graphql.js';
import { after, events, fail, market, print, stopIfTokenRefused, token, wsUrl } from './settings.js';

const wsClient = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  // Called on every (re)connect: return a fresh token here when yours can expire.
  connectionParams: async () => ({ authorization: `Bearer ${token}` }),
  on: { closed: stopIfTokenRefused },
});
const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });

// The documents are typed (src/generated/graphql.ts), so `data` is: no casts, no guessing.
const prices = new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client
    .subscribe({ query: PriceUpdatesDocument, variables: { market }, fetchPolicy: 'no-cache' })
    .subscribe({
      next: ({ data, error }) => {
        if (error || !data) return reject(error);
        print('priceUpdates', data.priceUpdates);
        if (++seen === events) resolve(subscription.unsubscribe());
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
await wsClient.dispose();
