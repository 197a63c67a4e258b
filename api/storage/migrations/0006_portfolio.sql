-- The portfolio dashboard: price alerts ("benchmarks"), trim rules, spot holdings, conversions,
-- and price samples for 24 h changes.

CREATE TABLE price_alerts (
    id           text PRIMARY KEY,
    owner        text NOT NULL,
    asset        text NOT NULL,
    target_price numeric NOT NULL CHECK (target_price > 0),
    direction    text NOT NULL CHECK (direction IN ('up', 'down')),
    action       text NOT NULL,
    once         boolean NOT NULL,
    armed        boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    triggered_at timestamptz
);
CREATE INDEX price_alerts_armed ON price_alerts (asset) WHERE armed;
CREATE INDEX price_alerts_by_owner ON price_alerts (owner);

-- The last price the alert worker saw per asset: a restart compares the next price with it, so
-- a crossing while the server was down fires once, and nothing fires twice.
CREATE TABLE alert_last_prices (
    asset text PRIMARY KEY,
    price numeric NOT NULL
);

CREATE TABLE trim_rules (
    id              text PRIMARY KEY,
    owner           text NOT NULL,
    symbol          text NOT NULL REFERENCES markets (id),
    gain_percent    numeric NOT NULL CHECK (gain_percent > 0),
    sell_percent    numeric NOT NULL CHECK (sell_percent > 0 AND sell_percent <= 100),
    last_trim_price numeric,
    created_at      timestamptz NOT NULL
);
CREATE INDEX trim_rules_by_symbol ON trim_rules (symbol);

CREATE TABLE portfolio_holdings (
    owner        text NOT NULL,
    asset        text NOT NULL,
    amount       numeric NOT NULL CHECK (amount >= 0),
    average_cost numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    PRIMARY KEY (owner, asset)
);

CREATE TABLE price_samples (
    market text NOT NULL REFERENCES markets (id),
    at     timestamptz NOT NULL,
    price  numeric NOT NULL,
    PRIMARY KEY (market, at)
);
