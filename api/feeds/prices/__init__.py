"""Oracle prices: markets, latest prices, live updates, and the loop workers follow them with."""
