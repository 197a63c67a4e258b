-- The paper exchange: each user's account (balances, positions, orders, fills) as one document,
-- changed under a row lock; the symbols whose price can fill or trigger one of its orders.

CREATE TABLE paper_accounts (
    owner         text PRIMARY KEY,
    payload       jsonb NOT NULL,
    watch_symbols text[] NOT NULL DEFAULT '{}',
    revision      bigint NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX paper_accounts_watching ON paper_accounts USING gin (watch_symbols);

CREATE TABLE paper_fills (
    owner    text NOT NULL,
    id       text NOT NULL,
    order_id text NOT NULL,
    payload  jsonb NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX paper_fills_by_time ON paper_fills (owner, at DESC);
