// The tradestream live demo: prices, the demo marathon's leaderboard and, signed in, the
// user's positions and martingale strategies, all over one graphql-transport-ws socket.

import { GraphQLWsClient } from "./graphql-ws.js";

const TOKEN_KEY = "tradestream.demo.token";
const RESUBSCRIBE_MS = 1000;

const MARKETS = `query DemoMarkets { markets { id base quote tickSize } }`;
const PRICES = `subscription DemoPrices($market: String!) {
  priceUpdates(market: $market) { market price confidence publishedAt sequence }
}`;
const MARATHONS = `query DemoMarathons { marathons { id name running public accounts endsAt } }`;
const LEADERBOARD = `subscription DemoLeaderboard($id: ID!) {
  marathonLeaderboard(marathonId: $id, top: 10) {
    accounts
    rows { rank login profit profitPercentage equity openPositionsCount }
  }
}`;
const POSITION_FIELDS = `id market side size entryPrice markPrice unrealizedPnl healthFactor liquidationPrice`;
const POSITIONS = `subscription DemoPositions($after: String) {
  positions(after: $after) {
    __typename
    ... on Resumable { cursor }
    ... on PositionsUpdate { positions { ${POSITION_FIELDS} } at }
    ... on PositionOpened { position { id market side size } at }
    ... on PositionModified { position { id market side size } reason at }
    ... on PositionClosed { position { id market side } returned at }
    ... on PositionLiquidated { position { id market side } returned at }
    ... on LiquidationWarning { position { id market side } healthFactor at }
    ... on StreamReset { resetReason: reason }
  }
}`;
const RENEW = `mutation DemoRenewSession($token: String!) { renewSession(token: $token) { expiresAt } }`;
const MARTINGALE = `subscription DemoMartingale {
  martingaleProgress {
    walletAddress
    strategies {
      strategyId currentRound totalRounds progressPercentage currentAmountSol
      profitLossSol winRatePercentage riskLevel status
    }
    at
  }
}`;

const $ = (selector) => document.querySelector(selector);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (className) td.className = className;
  return td;
}

function signed(value) {
  if (value === null || value === undefined) return "";
  const n = Number(value);
  return n > 0 ? "up" : n < 0 ? "down" : "";
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function messageOf(errors) {
  const list = Array.isArray(errors) ? errors : [errors];
  return list.map((e) => e?.message ?? String(e)).join("; ");
}

/** The token's claims, for display only (the server verifies it). */
function claimsOf(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT: expected three dot-separated parts");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(json);
}

// ---------------------------------------------------------------- connection

let token = sessionStorage.getItem(TOKEN_KEY);

const client = new GraphQLWsClient({
  url: new URL("/graphql", location.href).toString().replace(/^http/, "ws"),
  connectionParams: () => (token ? { authorization: `Bearer ${token}` } : {}),
  onState: showConnection,
  onClose: (event) => {
    // 4403: the server refused the token (or it expired). Go on anonymously, and say why.
    if (event.code === 4403 && token) signOut(event.reason || "token refused");
  },
  // The expiry notice: the token has tokenExpiresInS left on this socket. Offer to renew it.
  onPing: (payload) => {
    if (token && payload && "tokenExpiresInS" in payload) showExpiring(payload);
  },
});

function showExpiring({ tokenExpiresInS, tokenExpiresAt }) {
  $("#renew-notice").textContent =
    `Your token expires in ${Math.round(tokenExpiresInS)} s (${time(tokenExpiresAt)}). ` +
    "Paste a fresh one for the same user to renew it on this connection, without reconnecting.";
  $("#renew-error").hidden = true;
  $("#renew").hidden = false;
}

/** renewSession over the open socket: the connection keeps its subscriptions, and the new
 * token is the one a later reconnect sends. */
async function renew(value) {
  const claims = claimsOf(value); // throws on something that is not a JWT
  if (claims.sub !== userOf(token)) {
    throw new Error(`that token is for ${claims.sub ?? "?"}: renewing keeps the same user (sign out to change)`);
  }
  const result = await client.request(RENEW, { token: value });
  if (result?.errors) throw new Error(messageOf(result.errors));
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#renew").hidden = true;
  $("#renewed").textContent = `Token renewed on this connection, until ${time(result.data.renewSession.expiresAt)}.`;
  $("#renewed").hidden = false;
}

function showConnection(state, detail) {
  const box = $("#connection");
  box.dataset.state = state;
  document.body.classList.toggle("stale", state !== "connected");
  const text = {
    connecting: detail.attempt ? `reconnecting (attempt ${detail.attempt})…` : "connecting…",
    connected: token ? `live · signed in as ${userOf(token)}` : "live · anonymous",
    waiting: `disconnected${detail.code ? ` (${detail.code}${detail.reason ? ` ${detail.reason}` : ""})` : ""} · retrying in ${(detail.delayMs / 1000).toFixed(1)} s`,
    closed: "closed",
  }[state];
  $("#connection-text").textContent = text;
  if (state === "connected") loadOnce();
}

/** A subscription that starts again whenever the server ends it: after RESUBSCRIBE_MS, and
 * after twice as long each time it is refused in a row (up to a minute). A server that is
 * shutting down refuses nothing of ours: the operation goes again, on the next connection. */
function keepSubscribed(payload, { next, error }) {
  let stop = null;
  let stopped = false;
  let refusals = 0;
  const again = (delayMs) => setTimeout(start, delayMs);
  function start() {
    if (stopped) return;
    stop = client.subscribe(payload, {
      next: (result) => {
        if (result.errors) error?.(result.errors);
        if (result.data) {
          refusals = 0;
          next(result.data);
        }
      },
      error: (errors) => {
        error?.(errors);
        if (errors?.[0]?.extensions?.code === "SHUTTING_DOWN") again(RESUBSCRIBE_MS);
        else again(Math.min(60000, RESUBSCRIBE_MS * 2 ** refusals++));
      },
      complete: () => again(RESUBSCRIBE_MS),
    });
  }
  start();
  return () => {
    stopped = true;
    stop?.();
  };
}

// ---------------------------------------------------------------- markets

let marketsLoaded = false;
let marathonsLoaded = false;

function loadOnce() {
  if (!marketsLoaded) {
    marketsLoaded = true;
    client
      .request(MARKETS)
      .then((result) => {
        if (!result?.data) throw result?.errors ?? new Error("no markets");
        for (const market of result.data.markets) watchPrice(market);
      })
      .catch((errors) => {
        marketsLoaded = false;
        $("#prices-error").textContent = messageOf(errors);
      });
  }
  if (!marathonsLoaded) {
    marathonsLoaded = true;
    client
      .request(MARATHONS)
      .then((result) => {
        if (!result?.data) throw result?.errors ?? new Error("no marathons");
        const marathons = result.data.marathons;
        const marathon =
          marathons.find((m) => m.id === "demo") ?? marathons.find((m) => m.running) ?? marathons[0];
        if (marathon) watchLeaderboard(marathon);
        else $("#leaderboard-meta").textContent = "No marathon yet.";
      })
      .catch((errors) => {
        marathonsLoaded = false;
        $("#leaderboard-meta").textContent = messageOf(errors);
      });
  }
}

const SVG = "http://www.w3.org/2000/svg";
const SPARK_POINTS = 90;

/** A cell with a line of the last SPARK_POINTS prices; returns a function that adds one. */
function sparkline() {
  const td = cell("", "spark");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS - 1} 30`);
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(SVG, "polyline");
  svg.append(line);
  td.append(svg);
  const values = [];
  const add = (value) => {
    values.push(value);
    if (values.length > SPARK_POINTS) values.shift();
    const low = Math.min(...values);
    const span = Math.max(...values) - low || 1;
    const offset = SPARK_POINTS - values.length;
    line.setAttribute(
      "points",
      values.map((v, i) => `${offset + i},${(28 - ((v - low) / span) * 26).toFixed(2)}`).join(" "),
    );
    line.setAttribute("class", values[values.length - 1] >= values[0] ? "up" : "down");
  };
  return [td, add];
}

function watchPrice(market) {
  const row = document.createElement("tr");
  row.dataset.market = market.id;
  const name = cell(market.id, "market");
  const price = cell("…", "price");
  const change = cell("", "change");
  const [spark, plot] = sparkline();
  const confidence = cell("", "confidence");
  const sequence = cell("", "sequence");
  const updated = cell("", "updated");
  row.append(name, price, change, spark, confidence, sequence, updated);
  $("#prices tbody").append(row);
  let first = null;
  let last = null;
  keepSubscribed(
    { query: PRICES, variables: { market: market.id } },
    {
      next: ({ priceUpdates: p }) => {
        const value = Number(p.price);
        first ??= value;
        const direction = last === null || value === last ? "" : value > last ? "up" : "down";
        last = value;
        plot(value);
        price.textContent = p.price;
        price.className = `price ${direction}`;
        const percent = first ? ((value - first) / first) * 100 : 0;
        change.textContent = `${percent >= 0 ? "+" : ""}${percent.toFixed(3)}%`;
        change.className = `change ${signed(percent)}`;
        confidence.textContent = `± ${p.confidence}`;
        sequence.textContent = `#${p.sequence}`;
        updated.textContent = time(p.publishedAt);
        if (direction) {
          row.classList.remove("flash-up", "flash-down");
          void row.offsetWidth; // restart the animation
          row.classList.add(`flash-${direction}`);
        }
      },
      error: (errors) => ($("#prices-error").textContent = messageOf(errors)),
    },
  );
}

// ---------------------------------------------------------------- leaderboard

function watchLeaderboard(marathon) {
  $("#marathon-name").textContent = marathon.name;
  keepSubscribed(
    { query: LEADERBOARD, variables: { id: marathon.id } },
    {
      next: ({ marathonLeaderboard: board }) => {
        $("#leaderboard-meta").textContent =
          `${board.accounts} accounts ranked · ${marathon.running ? "running" : "not running"} · updated ${new Date().toLocaleTimeString()}`;
        const rows = board.rows.map((r) => {
          const tr = document.createElement("tr");
          tr.append(
            cell(r.rank, "rank"),
            cell(r.login, "login"),
            cell(r.profit, `num ${signed(r.profit)}`),
            cell(r.profitPercentage === null ? "–" : `${Number(r.profitPercentage).toFixed(2)}%`, `num ${signed(r.profitPercentage)}`),
            cell(r.equity, "num"),
            cell(r.openPositionsCount, "num"),
          );
          return tr;
        });
        $("#leaderboard tbody").replaceChildren(...rows);
      },
      error: (errors) => ($("#leaderboard-meta").textContent = messageOf(errors)),
    },
  );
}

// ---------------------------------------------------------------- signed in

let stopPrivate = [];
let positionsCursor = null;
const events = [];

function userOf(value) {
  try {
    return claimsOf(value).sub ?? "?";
  } catch {
    return "?";
  }
}

function signIn(value) {
  const claims = claimsOf(value); // throws on something that is not a JWT
  if (claims.exp && claims.exp * 1000 < Date.now()) throw new Error("this token has expired");
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#auth-error").hidden = true;
  client.restart(); // a new socket, whose connection_init carries the token
  showSignedIn(); // its subscriptions are sent once that socket is acknowledged
}

function signOut(reason) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const stop of stopPrivate) stop();
  stopPrivate = [];
  positionsCursor = null;
  events.length = 0;
  $("#signed-in").hidden = true;
  $("#renew").hidden = true;
  $("#renewed").hidden = true;
  $("#sign-in").hidden = false;
  $("#positions tbody").replaceChildren();
  $("#martingale tbody").replaceChildren();
  $("#position-events").replaceChildren();
  if (reason) {
    $("#auth-error").textContent = reason;
    $("#auth-error").hidden = false;
  }
  client.restart();
}

function showSignedIn() {
  $("#user").textContent = userOf(token);
  $("#sign-in").hidden = true;
  $("#signed-in").hidden = false;
  $("#positions-meta").textContent = "waiting for the first update…";
  stopPrivate.push(
    keepSubscribed(
      // A function: each (re)subscription resumes after the newest cursor.
      () => ({ query: POSITIONS, variables: { after: positionsCursor } }),
      {
        next: ({ positions: event }) => onPositionEvent(event),
        error: (errors) => {
          if (messageOf(errors).includes("cursor") || errors?.[0]?.extensions?.code === "INVALID_CURSOR") {
            positionsCursor = null;
          }
          $("#positions-meta").textContent = messageOf(errors);
        },
      },
    ),
    keepSubscribed(
      { query: MARTINGALE },
      {
        next: ({ martingaleProgress: update }) => showStrategies(update),
        error: (errors) => ($("#martingale-meta").textContent = messageOf(errors)),
      },
    ),
  );
}

function onPositionEvent(event) {
  if (event.cursor) positionsCursor = event.cursor;
  switch (event.__typename) {
    case "PositionsUpdate":
      showPositions(event);
      break;
    case "StreamReset":
      logEvent(`stream reset (${event.resetReason}): starting from the current state`);
      break;
    case "PositionOpened":
      logEvent(`opened ${event.position.side} ${event.position.size} ${event.position.market}`, event.at);
      break;
    case "PositionModified":
      logEvent(`${event.position.market} ${event.reason}: size ${event.position.size}`, event.at);
      break;
    case "PositionClosed":
      logEvent(`closed ${event.position.market}, returned ${event.returned}`, event.at);
      break;
    case "PositionLiquidated":
      logEvent(`liquidated ${event.position.market}, returned ${event.returned}`, event.at);
      break;
    case "LiquidationWarning":
      logEvent(`warning: ${event.position.market} health ${event.healthFactor}`, event.at);
      break;
    default:
      break;
  }
}

function showPositions(update) {
  $("#positions-meta").textContent =
    `${update.positions.length} open · ${time(update.at)} · resumes after cursor ${positionsCursor ?? "–"} on reconnect`;
  const positions = [...update.positions].sort((a, b) => a.market.localeCompare(b.market));
  const rows = positions.map((p) => {
    const tr = document.createElement("tr");
    const health = Number(p.healthFactor);
    tr.append(
      cell(p.market, "market"),
      cell(p.side, `side ${p.side === "LONG" ? "up" : "down"}`),
      cell(p.size, "num"),
      cell(p.entryPrice, "num"),
      cell(p.markPrice, "num"),
      cell(p.unrealizedPnl, `num ${signed(p.unrealizedPnl)}`),
      cell(p.healthFactor, `num ${p.healthFactor === null ? "" : health < 1.2 ? "down" : health < 2 ? "warn" : "up"}`),
      cell(p.liquidationPrice, "num"),
    );
    return tr;
  });
  $("#positions tbody").replaceChildren(...rows);
}

function logEvent(text, at) {
  events.unshift(`${at ? `${time(at)} ` : ""}${text}`);
  events.length = Math.min(events.length, 6);
  $("#position-events").replaceChildren(
    ...events.map((e) => {
      const li = document.createElement("li");
      li.textContent = e;
      return li;
    }),
  );
}

function showStrategies(update) {
  $("#martingale-meta").textContent =
    `wallet ${update.walletAddress ?? "–"} · ${update.strategies.length} active · ${time(update.at)}`;
  const rows = update.strategies.map((s) => {
    const tr = document.createElement("tr");
    const bar = document.createElement("td");
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = Number(s.progressPercentage);
    bar.append(progress, ` ${s.currentRound}/${s.totalRounds}`);
    tr.append(
      cell(s.strategyId.slice(0, 8), "id"),
      cell(s.status, "status"),
      bar,
      cell(s.currentAmountSol, "num"),
      cell(s.profitLossSol, `num ${signed(s.profitLossSol)}`),
      cell(s.winRatePercentage === null ? "–" : `${s.winRatePercentage}%`, "num"),
      cell(s.riskLevel, `risk risk-${s.riskLevel.toLowerCase()}`),
    );
    return tr;
  });
  $("#martingale tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------- start

$("#sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#token").value.trim().replace(/^Bearer\s+/i, "");
  try {
    signIn(value);
    $("#token").value = "";
  } catch (error) {
    $("#auth-error").textContent = `Not a usable token: ${error.message}`;
    $("#auth-error").hidden = false;
  }
});
$("#sign-out").addEventListener("click", () => signOut());
$("#renew").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("#renew-token").value.trim().replace(/^Bearer\s+/i, "");
  renew(value).then(
    () => ($("#renew-token").value = ""),
    (error) => {
      $("#renew-error").textContent = `Not renewed: ${error.message ?? messageOf(error)}`;
      $("#renew-error").hidden = false;
    },
  );
});

if (token) showSignedIn();
client.start();
