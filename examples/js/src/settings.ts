import { readFileSync } from 'node:fs';

// What every example reads from its environment, and how it reports: one JSON line per event on
// stdout, exit 0 after TRADESTREAM_EVENTS events of each feed, 1 on an error or a time-out.

/** The server's GraphQL endpoint over HTTP; the WebSocket one is the same with ws: or wss:. */
export const url = process.env.TRADESTREAM_URL ?? 'http://127.0.0.1:8000/graphql';
export const wsUrl = url.replace(/^http/, 'ws');

/** A JWT (mint one with `tradestream token --sub demo`): the positions feed is the token's user's. */
export const token = process.env.TRADESTREAM_TOKEN ?? fail('set TRADESTREAM_TOKEN to a token');

export const market = process.env.TRADESTREAM_MARKET ?? 'BTC-PERP';
export const events = Number(process.env.TRADESTREAM_EVENTS ?? '3');

/** The cursor of the last positions event a previous run printed: resume right after it. */
export const after = process.env.TRADESTREAM_AFTER || null;

const timeoutS = Number(process.env.TRADESTREAM_TIMEOUT_S ?? '30');
setTimeout(() => fail(`fewer than ${events} events of each feed in ${timeoutS} s`), timeoutS * 1000).unref();

let newestCursor = after;

/** Keep the newest positions cursor: a later run with TRADESTREAM_AFTER set to it resumes there. */
export function keepCursor(cursor: string | null): void {
  newestCursor = cursor ?? newestCursor;
}

export function done(): never {
  console.error(`resume the positions with TRADESTREAM_AFTER=${newestCursor}`);
  process.exit(0);
}

export function print(feed: string, event: unknown): void {
  process.stdout.write(JSON.stringify({ feed, event }) + '\n');
}

export function fail(error: unknown): never {
  const message = error instanceof Error ? error.message : typeof error === 'string' ? error : JSON.stringify(error);
  // Apollo's ServerError (an HTTP status other than 200) keeps the body, which says why.
  const body = error instanceof Error && 'bodyText' in error ? ` ${error.bodyText}` : '';
  console.error(`error: ${message}${body}`);
  process.exit(1);
}

/** A file holding a fresh token for the same user, rewritten by whatever refreshes your tokens.
 * With it, the WebSocket examples renew their session in band when the server's expiry notice
 * comes (a ping whose payload says how long the token has left): the socket and every
 * subscription stay, with no reconnect. Without it they keep their one token. */
export const tokenFile = process.env.TRADESTREAM_TOKEN_FILE || null;

/** The expiry notice: a graphql-transport-ws ping whose payload says when the token expires. */
export function isExpiryNotice(payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && 'tokenExpiresInS' in payload;
}

/** The token to renew with: tokenFile's content now. */
export function freshToken(): string {
  if (!tokenFile) fail('no TRADESTREAM_TOKEN_FILE to renew from');
  return readFileSync(tokenFile, 'utf8').trim();
}

export function renewed(result: { expiresAt?: string | null } | null | undefined): void {
  if (!result) fail('the session was not renewed');
  console.error(`session renewed until ${result.expiresAt}`);
}

/** graphql-ws retries a close with 4403 (token refused or expired), calling connectionParams again
 * for a fresh token. These examples have only the one token, so they stop instead. */
export function stopIfTokenRefused(event: unknown): void {
  const { code, reason } = event as { code: number; reason: string };
  if (code === 4403) fail(`the server refused the token: ${reason}`);
}
