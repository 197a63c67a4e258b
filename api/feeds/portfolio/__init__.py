"""The portfolio dashboard: trades, trims, price alerts, portfolio value, conversions."""
