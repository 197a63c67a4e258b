// graphql-ws alone: one WebSocket (subprotocol graphql-transport-ws), the token in connection_init.
import { print as printDocument } from 'graphql';
import { createClient, type SubscribePayload } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { PositionsDocument, PriceUpdatesDocument, RenewSessionDocument } from './generated/graphql.js';
import type { PositionsSubscription, PriceUpdatesSubscription } from './generated/graphql.js';
import type { RenewSessionMutation } from './generated/graphql.js';
import { after, done, events, fail, keepCursor, market, print } from './settings.js';
import { freshToken, isExpiryNotice, renewed, tokenFile } from './settings.js';
import { stopIfTokenRefused, token, wsUrl } from './settings.js';

const client = createClient({
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

/** renewSession over the open WebSocket, as any operation is sent. */
async function renew(): Promise<void> {
  const query = printDocument(RenewSessionDocument);
  for await (const { data, errors } of client.iterate<RenewSessionMutation>({
    query,
    variables: { token: freshToken() },
  })) {
    if (errors) fail(errors);
    renewed(data?.renewSession);
  }
}

/** Hands the data of the first `events` results to onData; leaving the loop completes it. */
async function take<T>(payload: SubscribePayload, onData: (data: T) => void): Promise<void> {
  let seen = 0;
  for await (const { data, errors } of client.iterate<T>(payload)) {
    if (errors || !data) fail(errors);
    onData(data);
    if (++seen === events) return;
  }
  fail('the server ended the subscription');
}

await Promise.all([
  take<PriceUpdatesSubscription>(
    { query: printDocument(PriceUpdatesDocument), variables: { market } },
    (data) => print('priceUpdates', data.priceUpdates),
  ),
  take<PositionsSubscription>(
    { query: printDocument(PositionsDocument), variables: { after } },
    (data) => {
      print('positions', data.positions);
      keepCursor(data.positions.cursor); // to resume right after this event
    },
  ),
]).catch(fail);
await client.dispose();
done();
