-- Markets, the latest oracle price per market, and per-topic event sequences.

CREATE TABLE markets (
    id                      text PRIMARY KEY,
    base                    text NOT NULL,
    quote                   text NOT NULL,
    tick_size               numeric NOT NULL CHECK (tick_size > 0),
    step_size               numeric NOT NULL CHECK (step_size > 0),
    min_order_size          numeric NOT NULL CHECK (min_order_size > 0),
    max_leverage            numeric NOT NULL CHECK (max_leverage >= 1),
    maintenance_margin_rate numeric NOT NULL CHECK (maintenance_margin_rate > 0),
    liquidation_fee_rate    numeric NOT NULL CHECK (liquidation_fee_rate >= 0),
    listed_at               timestamptz NOT NULL DEFAULT now()
);

INSERT INTO markets
    (id, base, quote, tick_size, step_size, min_order_size, max_leverage,
     maintenance_margin_rate, liquidation_fee_rate)
VALUES
    ('BTC-PERP', 'BTC', 'USD', 0.1,   0.0001, 0.0001, 20, 0.03, 0.015),
    ('ETH-PERP', 'ETH', 'USD', 0.01,  0.001,  0.001,  20, 0.03, 0.015),
    ('SOL-PERP', 'SOL', 'USD', 0.001, 0.01,   0.01,   10, 0.05, 0.015);

-- The sequence of the last event published on each topic (monotonic, shared by every process).
CREATE TABLE topic_sequences (
    topic    text PRIMARY KEY,
    sequence bigint NOT NULL CHECK (sequence > 0)
);

CREATE TABLE latest_prices (
    market       text PRIMARY KEY REFERENCES markets (id),
    price        numeric NOT NULL CHECK (price > 0),
    confidence   numeric NOT NULL CHECK (confidence >= 0),
    published_at timestamptz NOT NULL,
    sequence     bigint NOT NULL
);
