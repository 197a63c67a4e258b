"""Trading logic with no I/O: models, calculations, event types and the workers that drive them.

Workers are written against the small protocols in :mod:`domain.ports`, so they run in tests with
in-memory fakes and in the server with the adapters from :mod:`api`.
"""
