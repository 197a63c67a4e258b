"""The perpetuals DEX: positions, liquidations, market stats and funding."""
