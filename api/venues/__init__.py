"""Real trading venues reached through ccxt: opening a client, and what its errors mean."""
