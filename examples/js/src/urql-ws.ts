// urql over graphql-ws: subscriptionExchange forwards subscriptions to one WebSocket, the token
// in connection_init.
import { Client, subscriptionExchange } from '@urql/core';
import type { OperationResult, OperationResultSource } from '@urql/core';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { PositionsDocument, PriceUpdatesDocument, RenewSessionDocument } from './generated/graphql.js';
import { after, done, events, fail, keepCursor, market, print } from './settings.js';
import { freshToken, isExpiryNotice, renewed, tokenFile } from './settings.js';
import { stopIfTokenRefused, token, url, wsUrl } from './settings.js';

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

const client = new Client({
  url, // queries and mutations would go here over HTTP, with fetchExchange added to `exchanges`
  exchanges: [
    subscriptionExchange({
      // Mutations too: renewSession must go over the WebSocket whose credentials it replaces.
      enableAllOperations: true,
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

async function renew(): Promise<void> {
  const { data, error } = await client
    .mutation(RenewSessionDocument, { token: freshToken() })
    .toPromise();
  if (error) fail(error);
  renewed(data?.renewSession);
}

/** Hands the data of the first `events` results to onData, then unsubscribes. */
function take<T>(results: OperationResultSource<OperationResult<T>>, onData: (data: T) => void) {
  return new Promise<void>((resolve, reject) => {
    let seen = 0;
    const subscription = results.subscribe(({ data, error }) => {
      if (error || !data) return reject(error);
      onData(data);
      if (++seen === events) resolve(subscription.unsubscribe());
    });
  });
}

// The documents are typed (src/generated/graphql.ts): so are the variables and `data`.
await Promise.all([
  take(client.subscription(PriceUpdatesDocument, { market }), (data) =>
    print('priceUpdates', data.priceUpdates),
  ),
  take(client.subscription(PositionsDocument, { after }), (data) => {
    print('positions', data.positions);
    keepCursor(data.positions.cursor); // to resume right after this event
  }),
]).catch(fail);
await wsClient.dispose();
done();
