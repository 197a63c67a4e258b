-- How many rounds each strategy played, kept beside its other counters: settling a round for
-- every active strategy then reads the strategies' rows alone, not their whole round histories.

ALTER TABLE martingale_strategies ADD COLUMN rounds_played integer NOT NULL DEFAULT 0;

-- A settlement rewrites every active strategy's row. With room left on each page, the new
-- version goes beside the old one and no index is touched (a HOT update: none of the indexed
-- columns changes for a strategy that stays active): measured at 100,000 strategies, the
-- statement took 0.3 s instead of 1.75 s. The pages written from here on keep 60% free (at 50%,
-- the versions that grew, with an exit reason or longer totals, no longer fitted on the page).
ALTER TABLE martingale_strategies SET (fillfactor = 40);

UPDATE martingale_strategies s
SET rounds_played = played.n
FROM (SELECT strategy_id, count(*) AS n FROM martingale_rounds GROUP BY strategy_id) AS played
WHERE played.strategy_id = s.id;
