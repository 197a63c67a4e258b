// graphql-ws alone: one WebSocket (subprotocol graphql-transport-ws), the token in connection_init.
import { print as printDocument } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import {
  PositionsDocument,
  PriceUpdatesDocument,
  type PositionsSubscription,
  type PriceUpdatesSubscription,
} from './generated/graphql.js';
import { after, events, fail, market, print, stopIfTokenRefused, token, wsUrl } from './settings.js';

const client = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  // Called on every (re)connect: return a fresh token here when yours can expire.
  connectionParams: async () => ({ authorization: `Bearer ${token}` }),
  on: { closed: stopIfTokenRefused },
});

async function prices(): Promise<void> {
  const results = client.iterate<PriceUpdatesSubscription>({
    query: printDocument(PriceUpdatesDocument),
    variables: { market },
  });
  let seen = 0;
  for await (const { data, errors } of results) {
    if (errors || !data) fail(errors);
    print('priceUpdates', data.priceUpdates);
    if (++seen === events) break; // leaving the loop completes the subscription
  }
}

async function positions(): Promise<void> {
  const results = client.iterate<PositionsSubscription>({
    query: printDocument(PositionsDocument),
    variables: { after },
  });
  let seen = 0;
  for await (const { data, errors } of results) {
    if (errors || !data) fail(errors);
    // Keep data.positions.cursor: subscribing again with it as `after` resumes right after it.
    print('positions', data.positions);
    if (++seen === events) break;
  }
}

await Promise.all([prices(), positions()]).catch(fail);
await client.dispose();
