"""Prices from outside the process: each external source (an oracle, an exchange) behind the
:class:`domain.ports.PriceSource` port, the registry of source kinds ``PRICE_SOURCES`` names, and
the runner that follows them (``docs/sources.md``)."""
