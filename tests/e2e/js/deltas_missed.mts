// examples/js/src/deltas.ts against a scripted graphql-ws client (no server can be made to skip a
// patch): a patch whose number does not follow the last starts the subscription again, whose
// first result, whole, is handed on; what the stopped subscription still reports is ignored.
// Run by tests/e2e/test_examples.py with the examples' tsx; exits 1 with the reason on a failure.
import assert from 'node:assert/strict';
import type { Client, Sink, SubscribePayload } from 'graphql-ws';
import { withDeltas } from '../../../examples/js/src/deltas.ts';

type Message = Record<string, unknown>;
const subscribed: { payload: SubscribePayload; sink: Sink<Message>; stopped: boolean }[] = [];
const client = {
  subscribe(payload: SubscribePayload, sink: Sink<Message>) {
    const entry = { payload, sink, stopped: false };
    subscribed.push(entry);
    return () => {
      entry.stopped = true;
      queueMicrotask(() => sink.complete()); // as graphql-ws completes a subscription it stopped
    };
  },
} as unknown as Client;

const seen: Message[] = [];
let completed = 0;
let resubscribed = 0;
const deltas = withDeltas(client, { fullEvery: 5, onResubscribe: () => (resubscribed += 1) });
const stop = deltas.subscribe({ query: 'subscription { board { rows { id v } } }' }, {
  next: (result) => void seen.push(result as Message),
  error: (error) => assert.fail(String(error)),
  complete: () => void (completed += 1),
});

const rows = (...values: number[]) => ({ board: { rows: values.map((v, id) => ({ id, v })) } });
const [first] = subscribed;
assert.deepEqual(first.payload.extensions, { delta: { fullEvery: 5 } });
first.sink.next({ data: rows(1, 1), extensions: { delta: { seq: 7 }, tracing: 'kept' } });
first.sink.next({
  extensions: { delta: { seq: 8, patch: [{ op: 'replace', path: '/data/board/rows/1/v', value: 2 }] } },
});
assert.deepEqual(seen, [
  { data: rows(1, 1), extensions: { tracing: 'kept' } },
  { data: rows(1, 2), extensions: { tracing: 'kept' } },
]);
assert.deepEqual(seen[0], { data: rows(1, 1), extensions: { tracing: 'kept' } }, 'earlier results stay');

// seq 10 after 8: one was missed. Not handed on; subscribed again, the first one stopped.
first.sink.next({ extensions: { delta: { seq: 10, patch: [{ op: 'remove', path: '/data/board/rows/0' }] } } });
assert.equal(seen.length, 2);
assert.equal(resubscribed, 1);
assert.equal(subscribed.length, 2);
assert.ok(first.stopped);
await new Promise((resolve) => setTimeout(resolve, 10)); // the stopped one's complete: ignored
assert.equal(completed, 0);
const [, second] = subscribed;
second.sink.next({ data: rows(3, 4), extensions: { delta: { seq: 11 } } });
second.sink.next({ extensions: { delta: { seq: 12, patch: [{ op: 'move', from: '/data/board/rows/1', path: '/data/board/rows/0' }] } } });
assert.deepEqual(seen.slice(2), [{ data: rows(3, 4) }, { data: { board: { rows: [{ id: 1, v: 4 }, { id: 0, v: 3 }] } } }]);

stop();
await new Promise((resolve) => setTimeout(resolve, 10));
assert.ok(second.stopped);
assert.equal(completed, 1, 'stopping completes, as graphql-ws does');
console.log('ok');
