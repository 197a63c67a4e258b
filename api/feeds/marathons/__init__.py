"""Trading marathons: competitions between MetaTrader accounts ranked live by profit percentage."""
