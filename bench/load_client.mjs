// Load client for `python -m bench`: N graphql-transport-ws subscribers against one server.
// Derived from ../shared/bench/load_client.mjs (same defaults, same output for MODE=stream), extended
// with VARS_MODE and the idle and storm modes. Depends only on `ws`.
//
//   node load_client.mjs ws://127.0.0.1:PORT/graphql N [DUR]
//
// Environment:
//   MODE       stream (default) | idle | storm | resume
//   VARS_MODE  same (default) | distinct: subscriber i sends {...VARS, "n": i}, an undeclared variable
//              that GraphQL execution ignores but that makes every subscriber's variables different
//   QUERY, VARS, FIELD, INIT, PER_CONN   as in the shared client: `$i` in VARS becomes the
//              subscriber's index (VARS='{"u":"user-$i"}'); FIELD's `ts` (seconds), `pricedAt`,
//              `publishedAt` or `at` (ISO-8601), the first there is, is the publish time latency is
//              measured from; when it is `pricedAt` (the publication of the prices a result is
//              valued at), FIELD's `at` (when the result was made) is reported too, as
//              `stamp_p50_ms`, `stamp_p99_ms`
//   MARK_CLOCK stream: a market (BTC-PERP). One more socket subscribes to that market's
//              priceUpdates and counts the prices it gets while counting (`prices_per_s`): below
//              the rate when the server falls behind its own feed
//   COMPRESS   1: every socket offers permessage-deflate (ws's `perMessageDeflate: true`); stream
//              and idle then report how many negotiated it (`compressed_conns`); a message of a
//              server without context takeover is inflated at once (inflateEachMessageAtOnce).
//              Default: no offer
//   HOLD       idle: seconds to keep the sockets open at most (default 120; stdin closing or SIGTERM
//              ends the hold earlier)
//   soak (for `python -m bench.soak`): N connection slots for DUR seconds (up to 3600); each slot
//   connects, subscribes once (QUERY, variables {"m": MARKETS[i % 3]}, or with "n" added for a
//   DISTINCT fraction), receives for a life drawn between LIFE_MIN and LIFE_MAX seconds, leaves
//   (a clean `complete` + close 1000, or for an ABRUPT fraction a TCP reset with no close frame),
//   and reconnects after up to RECONNECT_MAX_MS. FIELD's `sequence` is checked per subscription:
//   any step other than +1 is a gap (missing sequences are counted as lost) or a step back.
//   Prints one JSON line every REPORT seconds (counts since the last line) and a final one.
//
//   resume (the resume-storm scenario, bench/resume.py): N sockets; the first USERS (default N/2)
//   each follow positions(user: "user-<i>"), the others marketStats(market: MARKET) and rounds,
//   two subscriptions a socket, all without `after`. Once every subscription has a cursor, all
//   sockets drop at once and one line says so (`phase: "dropped"`). The client then waits (up to
//   AWAY_MAX_S, default 600) for one JSON line on stdin: each topic's newest sequence
//   ({"marketStats": s, "rounds": s, "positions": [s of user-0, ...]}); it reconnects every socket
//   at once, resubscribes with `after:` its cursor, and checks each stream's sequences (the
//   cursor's `<sequence>.`): every event exactly once, in order, up to that newest one (a state
//   message, MarketStats or PositionsUpdate, must carry the cursor of the last event). A socket
//   has caught up when all its streams reached their newest; the line (`phase: "resumed"`)
//   comes once all have, or CATCH_UP_TIMEOUT_S (default 60) after the reconnect, 2 s later.
//   A frame a dropped socket still hands out is not taken (`late_after_drop`): the cursors are
//   those of the drop.
//
// Every mode prints one JSON line on stdout when its measurement is done; idle prints a second one
// when the hold ends. Bounded in count and time: the process always exits by itself.
import zlib from 'node:zlib';
import WebSocket, { PerMessageDeflate } from 'ws';

const [url, nArg, durArg] = process.argv.slice(2);
const MODE = process.env.MODE || 'stream';
const VARS_MODE = process.env.VARS_MODE || 'same';
const N = Number(nArg);
const DUR = Number(durArg || 10);
const PER_CONN = Number(process.env.PER_CONN || 1);
const QUERY = process.env.QUERY || 'subscription($m:String!){ priceUpdates(market:$m){ market price confidence ts } }';
const VARS_TEXT = process.env.VARS || '{"m":"BTC-PERP"}';
const VARS = JSON.parse(VARS_TEXT.replaceAll('$i', '0')); // checked once, before any socket
const MARK_CLOCK = process.env.MARK_CLOCK || '';
const FIELD = process.env.FIELD || 'priceUpdates';
const INIT = JSON.parse(process.env.INIT || '{}');
const HOLD = Number(process.env.HOLD || 120);
const COMPRESS = process.env.COMPRESS === '1';
const WS_OPTIONS = { perMessageDeflate: COMPRESS };
if (COMPRESS) inflateEachMessageAtOnce();
const CONNECT_TIMEOUT_S = 30; // stream, idle: a socket not acknowledged by then has failed
const WARMUP_S = 2; // stream: after every socket is set up, before counting
const IDLE_GRACE_S = 3; // idle: subscribed = first message, or ack + subscribe sent + this long
const STORM_TIMEOUT_S = 60;
const SAMPLE_EVERY = 7; // stream: parse one `next` in this many for its latency
const MAX_N = 50000;

// COMPRESS: ws inflates every message through a zlib stream per socket, on the thread pool, ten at
// a time for the whole process: at 60,000 messages/s that queue, not the server, set the pace
// (and the latency). A server that negotiated server_no_context_takeover compresses each message
// on its own, so a whole message inflates on its own too, synchronously, as a browser does in its
// own process. Anything else (a fragment, a server keeping its context) takes ws's own way.
function inflateEachMessageAtOnce() {
  const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);
  const SYNC = zlib.constants.Z_SYNC_FLUSH; // the message ends in a sync flush, not a final block
  const streamed = PerMessageDeflate.prototype.decompress;
  PerMessageDeflate.prototype.decompress = function decompress(data, fin, callback) {
    if (!fin || this._inflate || !this.params.server_no_context_takeover) {
      streamed.call(this, data, fin, callback);
      return;
    }
    let message;
    try {
      message = zlib.inflateRawSync(Buffer.concat([data, TRAILER]), { finishFlush: SYNC });
    } catch (error) {
      queueMicrotask(() => callback(error));
      return;
    }
    // Not at once: ws's receiver expects its callback after decompress() has returned.
    queueMicrotask(() => callback(null, message));
  };
}

function fail(message) {
  process.stderr.write(`load_client: ${message}\n`);
  process.exit(2);
}
let target;
try { target = new URL(url); } catch { fail(`not a URL: ${url}`); }
if (target.protocol !== 'ws:' || target.hostname !== '127.0.0.1') fail(`connects to ws://127.0.0.1 only, not ${url}`);
if (!Number.isInteger(N) || N < 1 || N > MAX_N) fail(`N must be an integer in 1..${MAX_N}, not ${nArg}`);
if (!(DUR > 0 && DUR <= (MODE === 'soak' ? 3600 : 600))) fail(`DUR must be in (0, ${MODE === 'soak' ? 3600 : 600}] seconds, not ${durArg}`);
if (!Number.isInteger(PER_CONN) || PER_CONN < 1 || PER_CONN > N) fail(`PER_CONN must be in 1..N`);
if (!(HOLD > 0 && HOLD <= 3600)) fail(`HOLD must be in (0, 3600] seconds`);
if (!['stream', 'idle', 'storm', 'soak', 'resume'].includes(MODE)) fail(`MODE must be stream, idle, storm, soak or resume, not ${MODE}`);
if (!['', '0', '1'].includes(process.env.COMPRESS || '')) fail('COMPRESS must be 0 or 1');
if (!['same', 'distinct'].includes(VARS_MODE)) fail(`VARS_MODE must be same or distinct, not ${VARS_MODE}`);

const CONNS = Math.max(1, Math.floor(N / PER_CONN));
const sockets = new Set();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const variablesFor = (i) => {
  const vars = VARS_TEXT.includes('$i') ? JSON.parse(VARS_TEXT.replaceAll('$i', String(i))) : VARS;
  return VARS_MODE === 'distinct' ? { ...vars, n: i } : vars;
};
const isNext = (s) => s.includes('"next"');

function subscribeAll(ws, conn) {
  for (let j = 0; j < PER_CONN; j++) {
    const i = conn * PER_CONN + j;
    ws.send(JSON.stringify({ id: String(j), type: 'subscribe', payload: { query: QUERY, variables: variablesFor(i) } }));
  }
}

function resultOf(message) {
  const data = message.payload && message.payload.data;
  return (data && data[FIELD]) || null;
}

function publishTime(ev) {
  if (!ev) return null;
  if (typeof ev.ts === 'number') return ev.ts;
  return isoTime(ev.pricedAt ?? ev.publishedAt ?? ev.at);
}

function isoTime(text) {
  if (typeof text !== 'string') return null;
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t / 1000;
}

// MARK_CLOCK: the prices of the market a subscriber of its priceUpdates gets.
const PRICE_CLOCK_QUERY = 'subscription($m:String!){ priceUpdates(market:$m){ price publishedAt } }';
let clockPrices = 0, clockCounted = 0; // prices the clock socket got: in all, while counting

function openPriceClock() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    let acked = false;
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: INIT })));
    ws.on('message', (buf) => {
      const m = JSON.parse(buf.toString());
      if (m.type === 'connection_ack') {
        acked = true;
        ws.send(JSON.stringify({ id: 'clock', type: 'subscribe', payload: { query: PRICE_CLOCK_QUERY, variables: { m: MARK_CLOCK } } }));
        resolve(true);
      } else if (m.type === 'next') {
        const p = m.payload.data && m.payload.data.priceUpdates;
        if (!p) return;
        clockPrices++;
        if (countingNow()) clockCounted++;
      }
    });
    ws.on('error', () => resolve(acked));
    ws.on('close', () => resolve(acked));
    setTimeout(() => resolve(acked), CONNECT_TIMEOUT_S * 1000);
  });
}

function percentile(sorted, q, scale) {
  if (!sorted.length) return null;
  return Math.round(10 * scale * sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]) / 10;
}

// Opens the sockets CONNS at a time, 100 at once then a 20 ms pause (as the shared client does).
async function openThrottled(open) {
  const all = [];
  for (let c = 0; c < CONNS; c++) { all.push(open(c)); if (c % 100 === 99) await sleep(20); }
  return Promise.all(all);
}

function closeAll() { for (const ws of sockets) { try { ws.terminate(); } catch { /* already gone */ } } }

// stream: N subscribers, warm-up, then count `next` messages for DUR seconds.
let countingNow = () => false;

async function stream() {
  let counting = false, count = 0, ok = 0, failed = 0, errors = 0, completed = 0, closedLater = 0;
  let payloadBytes = 0, compressed = 0;
  const receiving = new Set();
  const tcp = []; // every socket's TCP stream: bytes read there are the bytes on the wire
  const wireBytes = () => tcp.reduce((sum, socket) => sum + socket.bytesRead, 0);
  const lat = [], stamps = []; // s: from each sample's publishTime; from its `at` (pricedAt results)
  countingNow = () => counting;
  const clockOk = MARK_CLOCK ? await openPriceClock() : null;
  const open = (c) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    let settled = false, good = false;
    const done = (g) => { if (!settled) { settled = true; good = g; g ? ok++ : failed++; resolve(); } };
    ws.on('open', () => {
      tcp.push(ws._socket);
      if (ws.extensions.includes('permessage-deflate')) compressed++;
      ws.send(JSON.stringify({ type: 'connection_init', payload: INIT }));
    });
    ws.on('message', (buf) => {
      const s = buf.toString();
      if (isNext(s)) {
        receiving.add(c);
        if (counting) {
          count++;
          payloadBytes += buf.length;
          if (count % SAMPLE_EVERY === 0) {
            const now = Date.now() / 1000;
            const ev = resultOf(JSON.parse(s));
            const ts = publishTime(ev);
            if (ts) lat.push(now - ts);
            if (ev && typeof ev.pricedAt === 'string') { const at = isoTime(ev.at); if (at) stamps.push(now - at); }
          }
        }
        return;
      }
      const m = JSON.parse(s);
      if (m.type === 'connection_ack') { subscribeAll(ws, c); done(true); }
      else if (m.type === 'error') errors++;
      else if (m.type === 'complete') completed++;
    });
    ws.on('error', () => done(false));
    ws.on('close', () => { if (good) closedLater++; done(false); });
    setTimeout(() => done(false), CONNECT_TIMEOUT_S * 1000);
  });
  const tc = Date.now();
  await openThrottled(open);
  const connectS = (Date.now() - tc) / 1000;
  await sleep(WARMUP_S * 1000);
  const wire0 = wireBytes();
  counting = true; const t0 = Date.now(); await sleep(DUR * 1000); counting = false;
  const elapsed = (Date.now() - t0) / 1000;
  const wire = wireBytes() - wire0;
  lat.sort((a, b) => a - b);
  stamps.sort((a, b) => a - b);
  out({
    subscribers_ok: ok * PER_CONN, asked: CONNS * PER_CONN, failed_conns: failed, sub_errors: errors,
    msgs_per_s: Math.round(count / elapsed), p50_ms: percentile(lat, 0.5, 1000), p99_ms: percentile(lat, 0.99, 1000),
    // extensions over the shared client's line
    receiving_conns: receiving.size, completed, closed_after_ack: closedLater, latency_samples: lat.length,
    connect_s: Math.round(connectS * 100) / 100, seconds: Math.round(elapsed * 100) / 100,
    // bytes read from the sockets while counting (frames and anything else the server sent), and
    // the messages' own bytes (decompressed), per `next` counted
    wire_bytes_per_msg: count ? Math.round(10 * wire / count) / 10 : null,
    payload_bytes_per_msg: count ? Math.round(10 * payloadBytes / count) / 10 : null,
    compressed_conns: compressed,
    ...(MARK_CLOCK ? {
      mark_clock: MARK_CLOCK, mark_clock_subscribed: clockOk, prices: clockPrices, prices_per_s: Math.round(10 * clockCounted / elapsed) / 10,
    } : {}),
    ...(stamps.length ? { stamp_p50_ms: percentile(stamps, 0.5, 1000), stamp_p99_ms: percentile(stamps, 0.99, 1000) } : {}),
  });
}

// idle: N subscribed sockets, held open while the orchestrator reads the server's memory.
async function idle() {
  let ok = 0, failed = 0, errors = 0, closedLater = 0, compressed = 0;
  const open = (c) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    let settled = false, good = false;
    const done = (g) => { if (!settled) { settled = true; good = g; g ? ok++ : failed++; resolve(); } };
    ws.on('open', () => {
      if (ws.extensions.includes('permessage-deflate')) compressed++;
      ws.send(JSON.stringify({ type: 'connection_init', payload: INIT }));
    });
    ws.on('message', (buf) => {
      if (settled) return;
      const s = buf.toString();
      if (isNext(s)) { done(true); return; }
      const m = JSON.parse(s);
      if (m.type === 'connection_ack') { subscribeAll(ws, c); setTimeout(() => done(true), IDLE_GRACE_S * 1000); }
      else if (m.type === 'error') { errors++; done(false); }
    });
    ws.on('error', () => done(false));
    ws.on('close', () => { if (good) closedLater++; done(false); });
    setTimeout(() => done(false), CONNECT_TIMEOUT_S * 1000);
  });
  const tc = Date.now();
  await openThrottled(open);
  // subscribers_ok counts sockets that were subscribed; closed_after_subscribed, those of them the
  // server has closed since.
  out({
    subscribers_ok: ok * PER_CONN, asked: CONNS * PER_CONN, failed_conns: failed, sub_errors: errors,
    closed_after_subscribed: closedLater, connect_s: Math.round((Date.now() - tc) / 10) / 100,
    compressed_conns: compressed,
  });
  const t0 = Date.now();
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, HOLD * 1000);
    const end = () => { clearTimeout(timer); resolve(); };
    process.once('SIGTERM', end);
    process.stdin.once('end', end);
    process.stdin.once('close', end);
    process.stdin.once('error', end);
    process.stdin.resume();
  });
  out({ held_s: Math.round((Date.now() - t0) / 100) / 10, closed_after_subscribed: closedLater });
}

// storm: N sockets opened at once; time until every one has its first `next` (or has failed).
async function storm() {
  let subscribed = 0, failed = 0, errors = 0, lastSettled = 0;
  const firsts = [];
  const t0 = performance.now();
  const open = (c) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    let settled = false;
    const done = (good) => {
      if (settled) return;
      settled = true; lastSettled = performance.now() - t0;
      if (good) { subscribed++; firsts.push(lastSettled); } else failed++;
      resolve();
    };
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: INIT })));
    ws.on('message', (buf) => {
      if (settled) return;
      const s = buf.toString();
      if (isNext(s)) { done(true); return; }
      const m = JSON.parse(s);
      if (m.type === 'connection_ack') subscribeAll(ws, c);
      else if (m.type === 'error') { errors++; done(false); }
    });
    ws.on('error', () => done(false));
    ws.on('close', () => done(false));
  });
  const all = [];
  for (let c = 0; c < CONNS; c++) all.push(open(c));
  let timedOut = false;
  await Promise.race([Promise.all(all), sleep(STORM_TIMEOUT_S * 1000).then(() => { timedOut = true; })]);
  firsts.sort((a, b) => a - b);
  const pending = CONNS - subscribed - failed;
  out({
    subscribed: subscribed * PER_CONN, asked: CONNS * PER_CONN, failed_conns: failed + pending, sub_errors: errors,
    seconds_to_all_subscribed: timedOut ? null : Math.round(lastSettled) / 1000,
    // extensions: sockets neither subscribed nor failed at the time-out, per-socket time to first `next`
    timed_out: pending, p50_first_ms: percentile(firsts, 0.5, 1), p99_first_ms: percentile(firsts, 0.99, 1),
  });
}

// soak: N slots that connect, subscribe, receive, leave and come back, for DUR seconds.
async function soak() {
  const LIFE_MIN = Number(process.env.LIFE_MIN || 5);
  const LIFE_MAX = Number(process.env.LIFE_MAX || 60);
  const ABRUPT = Number(process.env.ABRUPT || 0.2);
  const DISTINCT = Number(process.env.DISTINCT || 0.1);
  const REPORT = Number(process.env.REPORT || 10);
  const RECONNECT_MAX_MS = Number(process.env.RECONNECT_MAX_MS || 1000);
  const MARKETS = JSON.parse(process.env.MARKETS || '["BTC-PERP","ETH-PERP","SOL-PERP"]');
  if (!(LIFE_MIN > 0 && LIFE_MAX >= LIFE_MIN)) fail('need 0 < LIFE_MIN <= LIFE_MAX');
  if (!(ABRUPT >= 0 && ABRUPT <= 1 && DISTINCT >= 0 && DISTINCT <= 1)) fail('ABRUPT and DISTINCT are fractions');
  if (!(REPORT >= 1)) fail('REPORT must be >= 1 second');
  const KEYS = ['connects', 'failed_conns', 'sub_errors', 'msgs', 'gaps', 'lost', 'backwards',
    'server_closed', 'left_clean', 'left_abrupt', 'first_msgs'];
  const zero = () => Object.fromEntries(KEYS.map((k) => [k, 0]));
  const totals = zero();
  let interval = zero();
  const bump = (k, n = 1) => { totals[k] += n; interval[k] += n; };
  const closeCodes = {};
  let open = 0, stopping = false, subscribers = 0;

  function slot(i) {
    if (stopping) return;
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    const variables = Math.random() < DISTINCT
      ? { m: MARKETS[i % MARKETS.length], n: `${i}-${Math.random()}` } : { m: MARKETS[i % MARKETS.length] };
    let acked = false, leaving = false, last = null, lifeTimer = null;
    const connectTimer = setTimeout(() => { if (!acked) { leaving = true; bump('failed_conns'); ws.terminate(); } }, CONNECT_TIMEOUT_S * 1000);
    const leave = () => {
      leaving = true;
      if (Math.random() < ABRUPT) {
        bump('left_abrupt');
        const raw = ws._socket;
        if (raw && typeof raw.resetAndDestroy === 'function') raw.resetAndDestroy(); else ws.terminate();
      } else {
        bump('left_clean');
        try { ws.send(JSON.stringify({ id: '1', type: 'complete' })); ws.close(1000); } catch { ws.terminate(); }
      }
    };
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: INIT })));
    ws.on('message', (buf) => {
      const m = JSON.parse(buf.toString());
      if (m.type === 'next') {
        const data = m.payload && m.payload.data && m.payload.data[FIELD];
        if (m.payload.errors || !data) { bump('sub_errors'); return; }
        bump('msgs');
        const seq = data.sequence;
        if (last === null) bump('first_msgs');
        else if (seq === last + 1) { /* in order */ } else if (seq > last + 1) { bump('gaps'); bump('lost', seq - last - 1); } else bump('backwards');
        last = seq;
      } else if (m.type === 'connection_ack') {
        acked = true; open++; subscribers++; bump('connects'); clearTimeout(connectTimer);
        ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: QUERY, variables } }));
        lifeTimer = setTimeout(leave, (LIFE_MIN + Math.random() * (LIFE_MAX - LIFE_MIN)) * 1000);
      } else if (m.type === 'error' || m.type === 'complete') bump('sub_errors');
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
      sockets.delete(ws); clearTimeout(lifeTimer); clearTimeout(connectTimer);
      if (acked) open--;
      if (!acked && !leaving && !stopping) bump('failed_conns');
      else if (acked && !leaving && !stopping) { bump('server_closed'); closeCodes[code] = (closeCodes[code] || 0) + 1; }
      if (!stopping) setTimeout(() => slot(i), Math.random() * RECONNECT_MAX_MS);
    });
  }

  const t0 = Date.now();
  let lastReport = t0;
  const report = (extra = {}) => {
    const now = Date.now();
    out({ t: Math.round((now - t0) / 100) / 10, seconds: Math.round((now - lastReport) / 100) / 10, open, ...interval, ...extra });
    interval = zero(); lastReport = now;
  };
  const reporter = setInterval(report, REPORT * 1000);
  for (let c = 0; c < CONNS; c++) { slot(c); if (c % 100 === 99) await sleep(20); }
  await sleep(Math.max(0, DUR * 1000 - (Date.now() - t0)));
  clearInterval(reporter);
  report({ last: true });
  await sleep(2000); // the orchestrator samples the server once more with every socket open
  stopping = true;
  for (const ws of sockets) { try { ws.close(1000); } catch { ws.terminate(); } }
  const deadline = Date.now() + 10000;
  while (sockets.size && Date.now() < deadline) await sleep(100);
  out({ final: true, ...totals, subscriptions: subscribers, open_at_end: sockets.size, server_close_codes: closeCodes,
    seconds: Math.round((Date.now() - t0) / 100) / 10 });
}

// resume: subscribe, record each stream's cursor, drop together, resume together, verify.
const RESUME_QUERIES = {
  marketStats: 'subscription($m:String!,$a:String){ marketStats(market:$m, after:$a){ __typename ... on Resumable { cursor } '
    + '... on MarketStats { markPrice fundingRate } ... on FundingRateChanged { rate settledAt } ... on StreamReset { resetReason: reason } } }',
  rounds: 'subscription($a:String){ rounds(after:$a){ __typename ... on Resumable { cursor } ... on Round { number settledAt won } '
    + '... on StreamReset { resetReason: reason } } }',
  positions: 'subscription($u:String!,$a:String){ positions(user:$u, after:$a){ __typename ... on Resumable { cursor } '
    + '... on PositionsUpdate { positions { id size collateral } } ... on PositionModified { reason position { id size collateral } } '
    + '... on PositionOpened { position { id } } ... on PositionClosed { position { id } } ... on PositionLiquidated { position { id } } '
    + '... on LiquidationWarning { healthFactor } ... on StreamReset { resetReason: reason } } }',
};
// Messages that carry where the stream stands without being an event of it.
const STATE_TYPES = new Set(['MarketStats', 'PositionsUpdate']);
const FIRST_WAIT_S = 30; // resume: after the last socket is acknowledged, for every first cursor

function readStdinLine(timeoutS) {
  return new Promise((resolve) => {
    let text = '';
    const timer = setTimeout(() => finish(null), timeoutS * 1000);
    const finish = (line) => { clearTimeout(timer); process.stdin.pause(); resolve(line); };
    process.stdin.on('data', (chunk) => {
      text += chunk.toString();
      const end = text.indexOf('\n');
      if (end >= 0) finish(text.slice(0, end));
    });
    process.stdin.once('end', () => finish(null));
    process.stdin.resume();
  });
}

async function resume() {
  const USERS = Number(process.env.USERS ?? Math.floor(N / 2));
  const MARKET = process.env.MARKET || 'BTC-PERP';
  const AWAY_MAX_S = Number(process.env.AWAY_MAX_S || 600);
  const CATCH_UP_TIMEOUT_S = Number(process.env.CATCH_UP_TIMEOUT_S || 60);
  if (!(Number.isInteger(USERS) && USERS >= 0 && USERS <= N)) fail('USERS must be in 0..N');
  if (PER_CONN !== 1) fail('resume: one client a socket (PER_CONN=1)');
  const clients = Array.from({ length: N }, (_, i) => ({
    i,
    subs: (i < USERS
      ? [{ key: 'positions', vars: { u: `user-${i}` }, user: i }]
      : [{ key: 'marketStats', vars: { m: MARKET } }, { key: 'rounds', vars: {} }])
      .map((sub) => ({ ...sub, cursor: null, seq: null })),
  }));
  const seqOf = (cursor) => Number(String(cursor).split('.')[0]);
  const first = { ok: 0, failed: 0, errors: 0, closed: 0 };
  const check = { ok: 0, failed: 0, errors: 0, closed: 0, completed: 0, lost: 0, gaps: 0, duplicates: 0,
    backwards: 0, resets: 0, replayed: 0, live: 0, states: 0 };
  let phase = 'first', t0 = 0;

  // One socket of one client: connection_init, then its subscriptions (with `after` when resuming).
  const connect = (client, counts, onMessage) => new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', WS_OPTIONS);
    sockets.add(ws);
    client.ws = ws;
    let settled = false, acked = false;
    const done = (good) => { if (!settled) { settled = true; good ? counts.ok++ : counts.failed++; resolve(good); } };
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: INIT })));
    ws.on('message', (buf) => {
      const m = JSON.parse(buf.toString());
      if (m.type === 'connection_ack') {
        acked = true;
        client.subs.forEach((sub, j) => {
          if (phase === 'resume' && sub.cursor === null) return;
          const variables = phase === 'resume' ? { ...sub.vars, a: sub.cursor } : sub.vars;
          ws.send(JSON.stringify({ id: String(j), type: 'subscribe', payload: { query: RESUME_QUERIES[sub.key], variables } }));
        });
        done(true);
      } else if (m.type === 'next') {
        const sub = client.subs[Number(m.id)];
        const ev = m.payload && m.payload.data && m.payload.data[sub.key];
        if (m.payload.errors || !ev) { counts.errors++; return; }
        onMessage(client, sub, ev);
      } else if (m.type === 'error') counts.errors++;
      else if (m.type === 'complete') counts.completed = (counts.completed || 0) + 1;
    });
    ws.on('error', () => done(false));
    ws.on('close', () => { if (acked && ws === client.ws && !client.dropping) counts.closed++; done(false); });
    setTimeout(() => done(false), CONNECT_TIMEOUT_S * 1000);
  });

  // Subscribe, until every subscription has its first cursor.
  let withCursor = 0, lateAfterDrop = 0;
  const subsTotal = clients.reduce((n, c) => n + c.subs.length, 0);
  const recordCursor = (client, sub, ev) => {
    // A dropped socket may still hand out a frame it had read: the client has lost it.
    if (phase !== 'first') { lateAfterDrop++; return; }
    if (typeof ev.cursor !== 'string') return;
    if (sub.cursor === null) withCursor++;
    sub.cursor = ev.cursor; sub.seq = seqOf(ev.cursor);
  };
  const tc = Date.now();
  await openThrottled((c) => connect(clients[c], first, recordCursor));
  const connectS = (Date.now() - tc) / 1000;
  const waitUntil = Date.now() + FIRST_WAIT_S * 1000;
  while (withCursor < subsTotal && Date.now() < waitUntil) await sleep(50);
  await sleep(500);
  // All drop at once: the cursors are frozen from here on.
  phase = 'dropped';
  for (const c of clients) { c.dropping = true; if (c.ws) c.ws.terminate(); }
  const pairs = new Set(), shared = new Set();
  for (const c of clients) for (const sub of c.subs) {
    if (sub.cursor === null) continue;
    pairs.add(`${sub.key}:${sub.user ?? ''}@${sub.cursor}`);
    if (sub.key !== 'positions') shared.add(`${sub.key}@${sub.cursor}`);
  }
  const resumable = clients.filter((c) => c.subs.every((sub) => sub.cursor !== null));
  out({
    phase: 'dropped', asked: N, users: USERS, subscribed: resumable.length, failed_conns: first.failed,
    sub_errors: first.errors, closed_by_server: first.closed, without_cursor: subsTotal - withCursor,
    subscriptions: subsTotal, distinct_pairs: pairs.size, shared_pairs: [...shared].sort(),
    connect_s: Math.round(connectS * 100) / 100,
  });

  const line = await readStdinLine(AWAY_MAX_S);
  if (line === null) fail(`resume: no newest sequences on stdin within ${AWAY_MAX_S} s`);
  const newest = JSON.parse(line);
  let expected = 0; // events between the cursors and the newest: what must be replayed
  for (const c of resumable) for (const sub of c.subs) {
    sub.target = sub.key === 'positions' ? newest.positions[sub.user] : newest[sub.key];
    if (!Number.isInteger(sub.target)) fail(`resume: no newest sequence for ${sub.key} ${sub.user ?? ''}`);
    sub.last = sub.seq;
    expected += Math.max(0, sub.target - sub.seq);
    sub.caughtMs = sub.last >= sub.target && sub.key === 'rounds' ? 0 : null; // nothing to replay, nothing sent
  }
  let caught = 0;
  const caughtMs = [];
  const noteCaught = (client) => {
    if (client.caughtMs != null || client.subs.some((sub) => sub.caughtMs === null)) return;
    client.caughtMs = Math.max(...client.subs.map((sub) => sub.caughtMs));
    caughtMs.push(client.caughtMs);
    caught++;
  };
  const verify = (client, sub, ev) => {
    if (ev.__typename === 'StreamReset') { check.resets++; return; }
    const seq = seqOf(ev.cursor);
    if (!Number.isInteger(seq)) { check.errors++; return; }
    if (STATE_TYPES.has(ev.__typename)) {
      check.states++;
      if (seq > sub.last) { check.gaps++; check.lost += seq - sub.last; sub.last = seq; } else if (seq < sub.last) check.backwards++;
    } else if (seq === sub.last + 1) {
      sub.last = seq;
      if (seq <= sub.target) check.replayed++; else check.live++;
    } else if (seq <= sub.last) check.duplicates++;
    else { check.gaps++; check.lost += seq - sub.last - 1; sub.last = seq; }
    if (sub.caughtMs === null && sub.last >= sub.target) { sub.caughtMs = performance.now() - t0; noteCaught(client); }
  };

  // Every socket back at once, as after a restart.
  phase = 'resume';
  t0 = performance.now();
  for (const c of resumable) { c.dropping = false; c.ws = null; }
  await Promise.all(resumable.map((c) => connect(c, check, verify).then((ok) => { if (ok) noteCaught(c); })));
  const until = t0 + CATCH_UP_TIMEOUT_S * 1000;
  while (caught < resumable.length && performance.now() < until) await sleep(20);
  const allS = caught === resumable.length && resumable.length > 0 ? Math.max(...caughtMs) / 1000 : null;
  await sleep(2000); // anything sent twice or out of order after catching up is still counted
  let behind = 0;
  for (const c of resumable) for (const sub of c.subs) if (sub.last < sub.target) behind += sub.target - sub.last;
  caughtMs.sort((a, b) => a - b);
  out({
    phase: 'resumed', asked: N, resumed: resumable.length, caught_up: caught,
    seconds_to_all_caught_up: allS === null ? null : Math.round(allS * 1000) / 1000,
    p50_caught_up_ms: percentile(caughtMs, 0.5, 1), p99_caught_up_ms: percentile(caughtMs, 0.99, 1),
    failed_conns: check.failed, sub_errors: check.errors, closed_by_server: check.closed, completed: check.completed,
    lost: check.lost, behind, gaps: check.gaps, duplicates: check.duplicates, backwards: check.backwards, resets: check.resets,
    replayed: check.replayed, expected_replayed: expected, live: check.live, states: check.states,
    late_after_drop: lateAfterDrop,
  });
}

// A hard stop in case a server stalls the measurement itself.
const limitS = MODE === 'stream' ? CONNECT_TIMEOUT_S + WARMUP_S + DUR + 30
  : MODE === 'idle' ? CONNECT_TIMEOUT_S + IDLE_GRACE_S + HOLD + 30
  : MODE === 'soak' ? DUR + 60
  : MODE === 'resume' ? CONNECT_TIMEOUT_S + FIRST_WAIT_S + Number(process.env.AWAY_MAX_S || 600) + Number(process.env.CATCH_UP_TIMEOUT_S || 60) + 30
  : STORM_TIMEOUT_S + 30;
setTimeout(() => { process.stderr.write(`load_client: gave up after ${limitS} s\n`); closeAll(); process.exit(3); }, limitS * 1000).unref();

try {
  await { stream, idle, storm, soak, resume }[MODE]();
} finally {
  closeAll();
}
process.exit(0);
