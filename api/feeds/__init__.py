"""The feeds, one package each, every one with the same file names: ``schema.py`` (its GraphQL
types, queries, mutations and subscriptions), ``desk.py`` (what its mutations and workers do),
``store.py`` (its PostgreSQL adapter) and what only it has (marathons: ``boards.py``, ``ingest.py``,
``messages.py``; prices: ``follower.py``)."""
