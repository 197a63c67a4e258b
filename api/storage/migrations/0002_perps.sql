-- Perpetuals: positions, their fills, liquidations, funding settlements; the newest event of
-- every latest-value topic (what a new subscriber sees first).

ALTER TABLE markets
    ADD COLUMN taker_fee_rate numeric NOT NULL DEFAULT 0.0005 CHECK (taker_fee_rate >= 0),
    ADD COLUMN skew_scale     numeric NOT NULL DEFAULT 1000000 CHECK (skew_scale > 0);

UPDATE markets SET skew_scale = 10000   WHERE id = 'BTC-PERP';
UPDATE markets SET skew_scale = 200000  WHERE id = 'ETH-PERP';
UPDATE markets SET skew_scale = 5000000 WHERE id = 'SOL-PERP';

CREATE TABLE perp_positions (
    id           text PRIMARY KEY,
    owner        text NOT NULL,
    market       text NOT NULL REFERENCES markets (id),
    side         text NOT NULL CHECK (side IN ('long', 'short')),
    size         numeric NOT NULL CHECK (size > 0),
    entry_price  numeric NOT NULL CHECK (entry_price > 0),
    collateral   numeric NOT NULL CHECK (collateral >= 0),
    realized_pnl numeric NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'liquidated')),
    revision     integer NOT NULL CHECK (revision > 0),
    opened_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    closed_at    timestamptz
);
CREATE INDEX perp_positions_open_by_owner ON perp_positions (owner) WHERE status = 'open';
CREATE INDEX perp_positions_open_by_market ON perp_positions (market) WHERE status = 'open';

CREATE TABLE perp_fills (
    id           bigserial PRIMARY KEY,
    position_id  text NOT NULL REFERENCES perp_positions (id),
    owner        text NOT NULL,
    market       text NOT NULL REFERENCES markets (id),
    side         text NOT NULL,
    kind         text NOT NULL,
    size         numeric NOT NULL CHECK (size >= 0),
    price        numeric NOT NULL CHECK (price > 0),
    notional     numeric NOT NULL,
    fee          numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    at           timestamptz NOT NULL,
    external_id  text UNIQUE
        -- set by the indexer's ingest: the on-chain event it came from, so a replay is a no-op
);
CREATE INDEX perp_fills_by_market_time ON perp_fills (market, at);
CREATE INDEX perp_fills_by_position ON perp_fills (position_id, id);

CREATE TABLE perp_liquidations (
    position_id text PRIMARY KEY REFERENCES perp_positions (id),
    owner       text NOT NULL,
    market      text NOT NULL REFERENCES markets (id),
    side        text NOT NULL,
    size        numeric NOT NULL,
    price       numeric NOT NULL,
    notional    numeric NOT NULL,
    reward      numeric NOT NULL,
    returned    numeric NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX perp_liquidations_by_time ON perp_liquidations (at);

CREATE TABLE perp_funding (
    id          bigserial PRIMARY KEY,
    market      text NOT NULL REFERENCES markets (id),
    rate        numeric NOT NULL,
    mark_price  numeric NOT NULL,
    index_price numeric NOT NULL,
    settled_at  timestamptz NOT NULL
);
CREATE INDEX perp_funding_by_market_time ON perp_funding (market, settled_at DESC);

CREATE TABLE latest_events (
    topic        text PRIMARY KEY,
    sequence     bigint NOT NULL,
    type         text NOT NULL,
    payload      jsonb NOT NULL,
    published_at timestamptz NOT NULL
);
