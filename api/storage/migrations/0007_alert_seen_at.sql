-- When the alert worker saw each asset's last price: an alert created after it has not seen that
-- price, so the next tick is its first and never fires (DOMAIN.md's first-tick rule).
ALTER TABLE alert_last_prices ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();
