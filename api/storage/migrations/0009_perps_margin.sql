-- Perps margin accounts: the free collateral each user trades perpetuals with, and the limits
-- that bound one user's position and a market's open interest (docs/perps.md, "Margin").

CREATE TABLE perp_margin_accounts (
    owner      text PRIMARY KEY,
    balance    numeric NOT NULL CHECK (balance >= 0),
        -- free collateral: not locked in any position
    deposited  numeric NOT NULL CHECK (deposited >= 0),
        -- every amount ever put in: the initial balance and the simulator's top-ups
    revision   bigint NOT NULL CHECK (revision >= 0),
    updated_at timestamptz NOT NULL
);

-- Per market, in base units: the most one user may hold on one side (the sum of its open
-- positions there), and the most all users together may hold on one side.
ALTER TABLE markets
    ADD COLUMN max_position_size numeric NOT NULL DEFAULT 1000000 CHECK (max_position_size > 0),
    ADD COLUMN max_open_interest numeric NOT NULL DEFAULT 10000000 CHECK (max_open_interest > 0);

UPDATE markets SET max_position_size = 20,    max_open_interest = 200    WHERE id = 'BTC-PERP';
UPDATE markets SET max_position_size = 400,   max_open_interest = 4000   WHERE id = 'ETH-PERP';
UPDATE markets SET max_position_size = 10000, max_open_interest = 100000 WHERE id = 'SOL-PERP';

-- Where a position's collateral lives: 'desk' positions were funded from the owner's margin
-- account and pay back into it; 'chain' positions are an indexer's (ingestPositionChange), funded
-- on chain, and the desk never trades them.
ALTER TABLE perp_positions
    ADD COLUMN source text NOT NULL DEFAULT 'desk' CHECK (source IN ('desk', 'chain'));

UPDATE perp_positions SET source = 'chain'
WHERE id IN (SELECT position_id FROM perp_fills WHERE external_id IS NOT NULL);
