-- How many rounds each strategy played, kept beside its other counters: settling a round for
-- every active strategy then reads the strategies' rows alone, not their whole round histories.

ALTER TABLE martingale_strategies ADD COLUMN rounds_played integer NOT NULL DEFAULT 0;

UPDATE martingale_strategies s
SET rounds_played = played.n
FROM (SELECT strategy_id, count(*) AS n FROM martingale_rounds GROUP BY strategy_id) AS played
WHERE played.strategy_id = s.id;
