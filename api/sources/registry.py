"""``PRICE_SOURCES``: which kinds of source a spec may name, and the sources they make.

A kind is a factory given every market that names it (market -> the spec's argument) and the
settings; it returns the sources serving them, so one connection can serve many markets (one Pyth
stream for every ``pyth:`` market). ``simulated`` is no source: it leaves the market to the
simulated feed. Another kind is one more entry in :data:`KINDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from api.sources.ccxt import ccxt_sources
from api.sources.pyth import pyth_sources

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    from api.settings import Settings
    from domain.ports import PriceSource

SourceFactory: TypeAlias = "Callable[[Mapping[str, str], Settings], list[PriceSource]]"
"""A kind's factory: (market -> argument, settings) -> its sources. ValueError, naming the
market, for an argument it cannot use."""

SIMULATED = "simulated"

KINDS: dict[str, SourceFactory] = {"ccxt": ccxt_sources, "pyth": pyth_sources}


class SourceConfigError(ValueError):
    """``PRICE_SOURCES`` names a market, kind or argument the server cannot use."""


def build_sources(
    settings: Settings,
    markets: Collection[str] | None = None,
    kinds: Mapping[str, SourceFactory] = KINDS,
) -> list[PriceSource]:
    """The sources ``PRICE_SOURCES`` asks for. ``markets``: the markets this server has, each
    market named checked against them (None: not checked, for a check before the database is
    open). SourceConfigError says what is wrong, and with what."""
    specs = settings.price_source_specs
    if markets is not None:
        unknown = sorted(set(specs) - set(markets))
        if unknown:
            raise SourceConfigError(
                f"PRICE_SOURCES names {', '.join(unknown)}, not a market of this server "
                f"(its markets: {', '.join(sorted(markets))})"
            )
    routes: dict[str, dict[str, str]] = {}
    for market, (kind, argument) in sorted(specs.items()):
        if kind == SIMULATED:
            if argument:
                raise SourceConfigError(f"PRICE_SOURCES: {market}: 'simulated' takes no argument")
            continue
        if kind not in kinds:
            known = ", ".join(sorted([*kinds, SIMULATED]))
            raise SourceConfigError(
                f"PRICE_SOURCES: {market}: unknown source kind {kind!r} (known: {known})"
            )
        if not argument:
            raise SourceConfigError(f"PRICE_SOURCES: {market}: {kind!r} needs an argument")
        routes.setdefault(kind, {})[market] = argument
    sources: list[PriceSource] = []
    for kind, kind_routes in routes.items():
        try:
            sources.extend(kinds[kind](kind_routes, settings))
        except ValueError as exc:
            raise SourceConfigError(f"PRICE_SOURCES: {exc}") from None
    return sources
