"""The exchange live dashboard over a paper trading account."""
