-- Martingale strategies and the mining rounds they play.

CREATE TABLE mining_rounds (
    number            bigint PRIMARY KEY CHECK (number > 0),
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL,
    settled_at        timestamptz,
    won               boolean,
    reward_multiplier numeric,
    CHECK (ends_at > starts_at),
    CHECK ((settled_at IS NULL) = (won IS NULL))
);

CREATE TABLE martingale_strategies (
    id             text PRIMARY KEY,
    owner          text NOT NULL,
    wallet_address text NOT NULL,
    base_amount    numeric NOT NULL,
    multiplier     numeric NOT NULL,
    total_rounds   integer NOT NULL,
    stop_loss      numeric,
    take_profit    numeric,
    budget         numeric,
    status         text NOT NULL,
    exit_reason    text,
    first_round    bigint NOT NULL,
        -- the first round it plays: the one after the round open when it started
    last_round     bigint,
    losing_streak  integer NOT NULL DEFAULT 0,
    wins           integer NOT NULL DEFAULT 0,
    total_deployed numeric NOT NULL DEFAULT 0,
    total_rewards  numeric NOT NULL DEFAULT 0,
    total_loss     numeric NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX martingale_strategies_by_wallet ON martingale_strategies (wallet_address);
CREATE INDEX martingale_strategies_active ON martingale_strategies (first_round)
    WHERE status = 'active';

CREATE TABLE martingale_rounds (
    strategy_id  text NOT NULL REFERENCES martingale_strategies (id) ON DELETE CASCADE,
    round_number bigint NOT NULL,
    amount       numeric NOT NULL,
    won          boolean NOT NULL,
    reward       numeric NOT NULL,
    PRIMARY KEY (strategy_id, round_number)
);
