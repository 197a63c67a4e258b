// Deltas for graphql-ws: a Client that asks the server for RFC 6902 patches instead of whole results
// (docs/protocols.md, "Deltas") and hands Apollo Client, urql or your own code whole results as
// before. Wrap the client once; use the wrapper wherever the client went:
//
//   const client = withDeltas(createClient({ url, webSocketImpl: WebSocket }));
//   new ApolloClient({ link: new GraphQLWsLink(client), cache: new InMemoryCache() });
//   subscriptionExchange({ forwardSubscription: (request) => ({
//     subscribe: (sink) => ({ unsubscribe: client.subscribe({ ...request, query: request.query ?? '' }, sink) }),
//   }) });
//
// Every subscribe asks for deltas (extensions.delta). The server answers with the first result
// whole, then patches numbered in sequence (extensions.delta.seq); this applies each one to the last
// result with fast-json-patch and hands on the result it makes. A patch whose number does not follow
// the last means one was missed: the subscription is started again, and its first result is whole.
// Results are handed on without extensions.delta, so the code reading them sees what it saw before.
import jsonpatch, { type Operation } from 'fast-json-patch';
import type { Client, FormattedExecutionResult, Sink, SubscribePayload } from 'graphql-ws';

export interface DeltaOptions {
  /** Ask for a whole result at least every this many results (the server's DELTA_FULL_EVERY,
   * 100 by default, if that is fewer). */
  fullEvery?: number;
  /** Told when a patch was missed and the subscription is started again. */
  onResubscribe?: (payload: SubscribePayload) => void;
  /** Told of each result as it came: whole or a patch (for metrics; results go to the sink). */
  onResult?: (kind: 'whole' | 'patch', bytes: number) => void;
}

interface Delta {
  seq: number;
  patch?: Operation[];
}

type Result = FormattedExecutionResult<Record<string, unknown>, unknown>;

export function withDeltas(client: Client, options: DeltaOptions = {}): Client {
  const request = options.fullEvery ? { fullEvery: options.fullEvery } : true;

  function subscribe<Data, Extensions>(
    payload: SubscribePayload,
    sink: Sink<FormattedExecutionResult<Data, Extensions>>,
  ): () => void {
    const asking: SubscribePayload = {
      ...payload,
      extensions: { ...payload.extensions, delta: request },
    };
    let last: Result | null = null;
    let seq = 0;
    let generation = 0;
    let stop = start();

    /** Subscribes; what an earlier subscription of this one still reports is ignored (graphql-ws
     * completes one it stopped). */
    function start(): () => void {
      const mine = ++generation;
      last = null;
      return client.subscribe<Record<string, unknown>, unknown>(asking, {
        next: (message) => {
          if (mine !== generation) return;
          const result = take(message);
          if (result) sink.next(result as FormattedExecutionResult<Data, Extensions>);
        },
        error: (error) => mine === generation && sink.error(error),
        complete: () => mine === generation && sink.complete(),
      });
    }

    /** The whole result `message` stands for, or null when a patch was missed. */
    function take(message: Result): Result | null {
      const { delta, rest } = split(message.extensions);
      if (!delta?.patch) {
        options.onResult?.('whole', JSON.stringify(message).length);
        last = { ...message, extensions: rest };
        if (rest === undefined) delete last.extensions;
        seq = delta?.seq ?? seq;
        return last;
      }
      options.onResult?.('patch', JSON.stringify(message).length);
      if (last === null || delta.seq !== seq + 1) {
        options.onResubscribe?.(payload);
        const missed = stop;
        stop = start();
        missed();
        return null;
      }
      // A new object: the result handed on before stays as it was (Apollo and urql may hold it).
      last = jsonpatch.applyPatch(last, delta.patch, false, false).newDocument;
      seq = delta.seq;
      return last;
    }

    return () => stop();
  }

  return {
    ...client,
    subscribe,
    iterate: <Data, Extensions>(payload: SubscribePayload) =>
      iterate<Data, Extensions>(payload, subscribe),
  };
}

/** extensions.delta, and the other extensions (undefined if none). */
function split(extensions: unknown): { delta: Delta | undefined; rest: Record<string, unknown> | undefined } {
  if (typeof extensions !== 'object' || extensions === null) return { delta: undefined, rest: undefined };
  const { delta, ...rest } = extensions as { delta?: Delta };
  return { delta, rest: Object.keys(rest).length ? rest : undefined };
}

/** graphql-ws's iterate, over a subscribe. */
function iterate<Data, Extensions>(
  payload: SubscribePayload,
  subscribe: (payload: SubscribePayload, sink: Sink<FormattedExecutionResult<Data, Extensions>>) => () => void,
): AsyncIterableIterator<FormattedExecutionResult<Data, Extensions>> {
  const results: FormattedExecutionResult<Data, Extensions>[] = [];
  let failure: unknown = null;
  let done = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  const stop = subscribe(payload, {
    next: (result) => {
      results.push(result);
      notify();
    },
    error: (error) => {
      failure = error ?? new Error('subscription failed');
      notify();
    },
    complete: () => {
      done = true;
      notify();
    },
  });
  const iterator: AsyncIterableIterator<FormattedExecutionResult<Data, Extensions>> = {
    async next() {
      while (!results.length && !done && failure === null) await new Promise<void>((resolve) => (wake = resolve));
      const result = results.shift();
      if (result) return { value: result, done: false };
      if (failure !== null) throw failure;
      return { value: undefined, done: true };
    },
    async return() {
      stop();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
