-- The perps engine follows position changes instead of reading every open position on each pass
-- (issue 19): each row records the transaction that last wrote it, and the engine reads the rows
-- written by transactions it may not have seen yet (PgPositionBook.position_changes).
--
-- A transaction id, not a sequence: sequence numbers are taken in one order and committed in
-- another, so "every row above the last number read" would skip a row whose transaction took a
-- lower number and committed after the read. Every transaction below a snapshot's xmin had ended
-- when the snapshot was taken, so "every row written by a transaction at or above the last read's
-- xmin" misses none (and may repeat a few, which the engine ignores).

ALTER TABLE perp_positions ADD COLUMN changed_by xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE FUNCTION perp_positions_changed_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_by := pg_current_xact_id();
    RETURN NEW;
END
$$;

CREATE TRIGGER perp_positions_changed_by BEFORE INSERT OR UPDATE ON perp_positions
    FOR EACH ROW EXECUTE FUNCTION perp_positions_changed_by();

CREATE INDEX perp_positions_by_change ON perp_positions (changed_by);

-- The engine reads the 24 h volumes again only when the oldest fill in the window leaves it: this
-- finds that fill without scanning each market's part of (market, at).
CREATE INDEX perp_fills_by_time ON perp_fills (at);
