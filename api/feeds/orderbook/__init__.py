"""The order book feed: each market's level-2 book (``domain/order_book.py``)."""
