// urql over graphql-ws: subscriptionExchange forwards subscriptions to one WebSocket, the token
// in connection_init.
import { Client, subscriptionExchange } from '@urql/core';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { PositionsDocument, PriceUpdatesDocument } from './generated/graphql.js';
import { after, events, fail, market, print, stopIfTokenRefused, token, url, wsUrl } from './settings.js';

const wsClient = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  // Called on every (re)connect: return a fresh token here when yours can expire.
  connectionParams: async () => ({ authorization: `Bearer ${token}` }),
  on: { closed: stopIfTokenRefused },
});

const client = new Client({
  url, // queries and mutations would go here over HTTP (add fetchExchange to `exchanges`)
  exchanges: [
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || '' };
        return {
          subscribe(sink) {
            const unsubscribe = wsClient.subscribe(input, sink);
            return { unsubscribe };
          },
        };
      },
    }),
  ],
});

// The documents are typed (src/generated/graphql.ts), so `data` is: no casts, no guessing.
const prices = new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client.subscription(PriceUpdatesDocument, { market }).subscribe((result) => {
    if (result.error || !result.data) return reject(result.error);
    print('priceUpdates', result.data.priceUpdates);
    if (++seen === events) resolve(subscription.unsubscribe());
  });
});

const positions = new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client.subscription(PositionsDocument, { after }).subscribe((result) => {
    if (result.error || !result.data) return reject(result.error);
    // Keep result.data.positions.cursor: subscribing again with it as `after` resumes after it.
    print('positions', result.data.positions);
    if (++seen === events) resolve(subscription.unsubscribe());
  });
});

await Promise.all([prices, positions]).catch(fail);
await wsClient.dispose();
