// A small client of the graphql-transport-ws protocol
// (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md), for the demo page.
//
// One socket; every operation is re-sent after a reconnect, with its payload computed again
// (so a resumable subscription can pass the newest cursor as `after`). Reconnects with
// exponential backoff and jitter; pings the server and reconnects when no pong comes back.

const PROTOCOL = "graphql-transport-ws";

export class GraphQLWsClient {
  /**
   * @param {object} options
   * @param {string} options.url ws:// or wss:// URL of the GraphQL endpoint
   * @param {() => object} [options.connectionParams] the connection_init payload, read on each connect
   * @param {(state: string, detail: object) => void} [options.onState] connecting, connected,
   *   waiting (to reconnect; detail.delayMs, detail.attempt), closed
   * @param {(event: CloseEvent) => void} [options.onClose] every close, before the reconnect is planned
   * @param {(payload: object | undefined) => void} [options.onPing] every ping from the server,
   *   with its payload (the expiry notice says how long the token has left)
   */
  constructor({ url, connectionParams = () => ({}), onState = () => {}, onClose = () => {}, onPing = () => {} }) {
    this.url = url;
    this.connectionParams = connectionParams;
    this.onState = onState;
    this.onClose = onClose;
    this.onPing = onPing;
    this.operations = new Map(); // id -> {payload: () => object, sink}
    this.nextId = 1;
    this.socket = null;
    this.acknowledged = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = true;
    this.minDelayMs = 500;
    this.maxDelayMs = 15000;
    this.pingIntervalMs = 15000;
    this.pongTimeoutMs = 10000;
  }

  start() {
    this.stopped = false;
    if (!this.socket && !this.retryTimer) this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this._drop(1000, "client stopped");
    this.onState("closed", {});
  }

  /** Close the socket and connect again at once (new connection params, e.g. after sign-in). */
  restart() {
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this._drop(1000, "reconnecting");
    if (!this.stopped) this._connect();
  }

  /**
   * Start an operation; it is sent again after each reconnect until it completes or is stopped.
   * @param {object | (() => object)} payload {query, variables}, or a function giving it each time
   * @param {{next?: Function, error?: Function, complete?: Function}} sink
   * @returns {() => void} stops the operation
   */
  subscribe(payload, sink) {
    const id = String(this.nextId++);
    const operation = { payload: typeof payload === "function" ? payload : () => payload, sink };
    this.operations.set(id, operation);
    if (this.acknowledged) this._send({ id, type: "subscribe", payload: operation.payload() });
    return () => {
      if (this.operations.delete(id) && this.acknowledged) this._send({ id, type: "complete" });
    };
  }

  /** A query or mutation's one result, as a promise (over the same socket). */
  request(query, variables) {
    return new Promise((resolve, reject) => {
      let result;
      this.subscribe(
        { query, variables },
        {
          next: (value) => (result = value),
          error: reject,
          complete: () => resolve(result),
        },
      );
    });
  }

  _connect() {
    this.retryTimer = null;
    this.acknowledged = false;
    this.onState("connecting", { attempt: this.attempt });
    const socket = new WebSocket(this.url, PROTOCOL);
    this.socket = socket;
    socket.onopen = () => {
      let payload;
      try {
        payload = this.connectionParams();
      } catch (error) {
        console.error("connectionParams failed", error);
        payload = {};
      }
      this._send({ type: "connection_init", payload });
    };
    socket.onmessage = (event) => this._receive(socket, event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return; // replaced by restart()
      this._closed(event);
    };
    socket.onerror = () => {}; // a close event follows, with the code
  }

  _receive(socket, data) {
    if (socket !== this.socket) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._drop(4400, "invalid JSON from the server");
      return;
    }
    switch (message.type) {
      case "connection_ack":
        this.acknowledged = true;
        this.attempt = 0;
        this._startPings();
        // Operations first: what onState starts is sent by subscribe() itself, once.
        for (const [id, operation] of this.operations) {
          this._send({ id, type: "subscribe", payload: operation.payload() });
        }
        this.onState("connected", {});
        break;
      case "next":
        this.operations.get(message.id)?.sink.next?.(message.payload);
        break;
      case "error": {
        const operation = this.operations.get(message.id);
        this.operations.delete(message.id);
        operation?.sink.error?.(message.payload);
        break;
      }
      case "complete": {
        const operation = this.operations.get(message.id);
        this.operations.delete(message.id);
        operation?.sink.complete?.();
        break;
      }
      case "ping":
        this._send({ type: "pong" });
        this.onPing(message.payload);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        this.pongTimer = null;
        break;
      default:
        break;
    }
  }

  _startPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.pongTimer) return;
      this._send({ type: "ping" });
      this.pongTimer = setTimeout(() => this._drop(4499, "no pong", true), this.pongTimeoutMs);
    }, this.pingIntervalMs);
  }

  _send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  /** Close the current socket; with `reconnect`, plan the next attempt as for a server close. */
  _drop(code, reason, reconnect = false) {
    const socket = this.socket;
    this._stopTimers();
    this.socket = null;
    this.acknowledged = false;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      try {
        socket.close(code >= 4000 || code === 1000 ? code : 1000, reason);
      } catch {
        socket.close();
      }
    }
    if (reconnect) this._closed({ code, reason, wasClean: false });
  }

  _closed(event) {
    this._stopTimers();
    this.socket = null;
    this.acknowledged = false;
    this.onClose(event);
    if (this.stopped || this.retryTimer || this.socket) return;
    // A server shutting down says when to come back (1012 "Service Restart: reconnect in 2317
    // ms", a delay drawn for each socket): its clients then return spread out, not all at once.
    const hint = /reconnect in (\d+) ms/.exec(event.reason || "");
    const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt);
    const delayMs = hint
      ? Math.min(Number(hint[1]), this.maxDelayMs)
      : Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.onState("waiting", { delayMs, attempt: this.attempt, code: event.code, reason: event.reason });
    this.retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  _stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }
}
