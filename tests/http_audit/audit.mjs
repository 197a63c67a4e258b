// graphql-http's server audits, the reference suite of the GraphQL-over-HTTP spec, against one
// GraphQL endpoint: `node audit.mjs http://127.0.0.1:8000/graphql`.
//
// Prints every audit that is not ok (its status, id, name and reason), then the tally, and as its
// last line the tally as JSON for tests/e2e/test_graphql_over_http.py. Exits 1 when any audit is a
// warning (a failed SHOULD) or an error (a failed MUST); notices (failed MAYs) are printed but
// pass. Each request gives up after TIMEOUT_MS, so a server that hangs fails instead of waiting.

import { readFileSync } from "node:fs";
import { serverAudits } from "graphql-http";

const TIMEOUT_MS = 10_000;
const STATUSES = ["ok", "notice", "warn", "error"];

const url = process.argv[2];
if (!url) {
  console.error("usage: node audit.mjs <graphql endpoint URL>");
  process.exit(2);
}

const fetchFn = (input, init) => fetch(input, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });
const version = JSON.parse(
  readFileSync(new URL("node_modules/graphql-http/package.json", import.meta.url), "utf8"),
).version;

const results = [];
for (const audit of serverAudits({ url, fetchFn })) {
  results.push(await audit.fn()); // one at a time: the tally is the same, the load is not
}

const tally = Object.fromEntries(STATUSES.map((status) => [status, 0]));
for (const result of results) {
  tally[result.status] += 1;
  if (result.status !== "ok") {
    console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${result.reason}`);
  }
}
const counts = STATUSES.map((status) => `${tally[status]} ${status}`).join(", ");
console.log(`graphql-http ${version} server audits of ${url}: ${results.length} audits, ${counts}`);
console.log(JSON.stringify({ graphqlHttp: version, audits: results.length, ...tally }));
process.exit(tally.warn + tally.error === 0 ? 0 : 1);
