// Apollo Client over graphql-ws with deltas (src/deltas.ts): the leaderboard arrives as RFC 6902
// patches, and Apollo Client sees every result whole, as without them.
import { ApolloClient, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; browsers and Node 22+ need no import
import { withDeltas } from './deltas.js';
import { LeaderboardDocument } from './generated/graphql.js';
import { events, fail, print, stopIfTokenRefused, token, wsUrl } from './settings.js';

/** The simulated demo marathon (SIMULATED_FEEDS), unless TRADESTREAM_MARATHON names another. */
const marathonId = process.env.TRADESTREAM_MARATHON ?? 'demo';

const received = { whole: 0, patch: 0, bytes: 0 };
const wsClient = withDeltas(
  createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: async () => ({ authorization: `Bearer ${token}` }),
    on: { closed: stopIfTokenRefused },
  }),
  {
    // Counted to show what deltas save; an application needs none of this.
    onResult: (kind, bytes) => {
      received[kind] += 1;
      received.bytes += bytes;
    },
    onResubscribe: () => console.error('a patch was missed: subscribed again'),
  },
);
const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });

await new Promise<void>((resolve, reject) => {
  let seen = 0;
  const subscription = client
    .subscribe({ query: LeaderboardDocument, variables: { marathonId, top: 100 }, fetchPolicy: 'no-cache' })
    .subscribe({
      next: ({ data, error }) => {
        if (error || !data) return reject(error);
        print('marathonLeaderboard', data.marathonLeaderboard); // whole, patches applied
        if (++seen === events) resolve(subscription.unsubscribe());
      },
      error: reject,
      complete: () => reject(new Error('the server ended the subscription')),
    });
}).catch(fail);
print('deltas', received);
await wsClient.dispose();
process.exit(0);
