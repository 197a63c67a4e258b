"""Tables, ratios, target checks and the markdown summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.scenarios import LABELS, TRADESTREAM

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.scenarios import Result

IDLE_TARGET_BYTES = 20 * 1024
HOT_DELIVERED_SHARE = 0.9
HOT_P99_MS = 50.0
STORM_SECONDS = 5.0
POSITIONS_DELIVERED_SHARE = 0.9
POSITIONS_P99_MS = 100.0
PROBE_P99_MS = 100.0
POSITIONS_REFERENCE_RATIO = 1.5
RESUME_CATCH_UP_S = 10.0
RESUME_READS_PER_PAIR = 2.0

TARGETS = {
    "hot": "delivered >= 90% of the offered msgs/s (60,000 at 3000 subscribers x 20 events/s), "
    "p99 <= 50 ms, 0 failed connections",
    "idle": "<= 20 KB (20,480 bytes) of server memory per subscribed connection",
    "storm": "5000 subscribed in <= 5 s, none failed",
    "positions": "every connection subscribed, delivered >= 90% of the offered msgs/s (36,000 at "
    "2000 users x 20 events/s), p99 <= 100 ms, publishPrice and query p99 <= 100 ms with every "
    "call answered, >= 1.5x the graphql-ws reference's msgs/s",
    "positions-wide": "every connection subscribed, delivered >= 90% of the offered msgs/s "
    "(18,000 at 10,000 users x 2 events/s), p99 <= 100 ms, publishPrice and query p99 <= 100 ms "
    "with every call answered, >= 1.5x the graphql-ws reference's msgs/s",
    "book": "delivered >= 90% of the offered msgs/s (2000 subscribers x the book changes "
    "published, about 50 a second), p99 <= 50 ms, 0 failed connections",
    "resume-storm": "every client caught up in <= 10 s, <= 2 history reads per distinct "
    "(topic, cursor) pair, 0 events lost (nothing twice, no reset)",
}

COLUMNS = ("server", "subscribers", "msgs/s", "p50 ms", "p99 ms", "failed conns", "RSS MB")
EXTRA_COLUMNS = {
    "idle": ("RSS before MB", "bytes/subscriber"),
    "storm": ("seconds", "listen-queue drops"),
    "resume-storm": ("seconds to catch up", "lost", "history reads", "reads/pair"),
}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _subscribers(r: Result) -> str:
    if r.subscribers_ok is None:
        return f"-/{r.asked}"
    return str(r.subscribers_ok) if r.subscribers_ok == r.asked else f"{r.subscribers_ok}/{r.asked}"


def _failed(r: Result) -> str:
    if r.failed_conns is None:
        return "-"
    errors = f" (+{r.sub_errors} errors)" if r.sub_errors else ""
    return f"{r.failed_conns}{errors}"


def _seconds(r: Result) -> str:
    if r.seconds is None:
        return "> 60 (time-out)" if r.client and r.error is None else "-"
    return f"{r.seconds:.2f}"


def _measured(r: Result) -> list[str]:
    """The columns every scenario has: subscribers, msgs/s, p50, p99, failed, RSS."""
    return [
        _subscribers(r),
        _num(r.msgs_per_s),
        _num(r.p50_ms, 1),
        _num(r.p99_ms, 1),
        _failed(r),
        _num(r.rss_mb, 1),
    ]


def row(r: Result) -> list[str]:
    if r.error is not None:
        cells = [r.label, f"-/{r.asked}", "error", "-", "-", "-", "-"]
        return cells + ["-"] * len(EXTRA_COLUMNS.get(r.scenario, ()))
    cells = [r.label, *_measured(r)]
    if r.scenario == "idle":
        cells += [_num(r.rss_before_mb, 1), _num(r.bytes_per_subscriber)]
    elif r.scenario == "storm":
        cells += [_seconds(r), _num(r.listen_overflows)]
    elif r.scenario == "resume-storm":
        cells += _resume_cells(r)
    return cells


def _resume_cells(r: Result) -> list[str]:
    """seconds to catch up, lost, history reads, reads per distinct pair."""
    storm = r.resume or {}
    resumed = storm.get("resumed", {})
    return [
        _seconds(r),
        _num(resumed.get("lost")),
        _num(storm.get("reads_issued")),
        _num(storm.get("reads_per_pair"), 2),
    ]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def scenario_report(name: str, summary: str, results: Sequence[Result], quick: bool) -> str:
    header = [*COLUMNS, *EXTRA_COLUMNS.get(name, ())]
    first = results[0]
    rate = f"{first.rate_hz:g} events/s on BTC-PERP"
    what = "away" if first.mode == "resume" else "measured"
    measured = f", {first.duration_s:g} s {what}" if first.duration_s else ""
    parts = [
        f"== {name}: {summary}",
        f"   {first.asked} subscribers asked, {rate}{measured}",
        text_table(header, [row(r) for r in results]),
    ]
    parts += [f"   {line}" for r in results for line in positions_lines(r)]
    parts += [f"   {line}" for r in results for line in resume_lines(r)]
    parts += [f"   {line}" for r in results for line in ratio_lines(r, results)]
    parts += [
        f"   target ({TARGETS[name]}): {verdict}" for verdict in target_verdicts(name, results)
    ]
    for r in results:
        if r.error is not None:
            parts.append(f"   {r.label} failed: {r.error}")
    return "\n".join(parts)


def positions_lines(r: Result) -> list[str]:
    """tradestream's positions set-up, price source and probes."""
    lines = []
    if r.price_source is not None:
        source = {
            "feed": f"the simulated feed at {r.rate_hz:g}/s",
            "publish": f"the benchmark's oracle, publishPrice {r.rate_hz:g}/s over HTTP",
        }.get(r.price_source, r.price_source)
        lines.append(f"{r.label} prices: {source}")
    if r.setup is not None:
        lines.append(
            f"{r.label} set-up: {r.setup['stored']:,} of {r.setup['users']:,} positions stored "
            f"through ingestPositionChange in {r.setup['seconds']:.1f} s "
            f"(BTC-PERP at {r.setup['price']})"
        )
    line = r.client[0] if r.client else {}
    if "prices_per_s" in line:
        lines.append(
            f"{r.label} BTC-PERP prices a second while measured: {line['prices_per_s']:g} "
            f"(a socket on priceUpdates; latency from PositionsUpdate.pricedAt, "
            f"{line.get('latency_samples', 0)} samples; from PositionsUpdate.at: "
            f"p99 {_num(line.get('stamp_p99_ms'), 1)} ms)"
        )
    lines += [f"{r.label} probe {probe_text(p)}" for p in r.probes]
    return lines


def resume_lines(r: Result) -> list[str]:
    """The resume storm's phases: dropped, away, resumed and checked, the reads it cost."""
    storm = r.resume
    if storm is None:
        return []
    dropped, resumed, newest = storm["dropped"], storm["resumed"], storm["newest"]
    reads = ", ".join(f"{key} {n:,}" for key, n in storm["history_reads"].items() if n) or "none"
    return [
        f"{r.label} dropped: {dropped['subscribed']:,}/{dropped['asked']:,} clients with a cursor "
        f"on every stream ({dropped['users']:,} on their own positions, the rest on marketStats "
        f"and rounds; {dropped['failed_conns']} failed, {dropped['sub_errors']} errors), "
        f"{dropped['distinct_pairs']:,} distinct (topic, cursor) pairs, the shared ones "
        f"{', '.join(dropped['shared_pairs']) or '-'}",
        f"{r.label} away {storm['away_s']:g} s: {storm['increases_stored']:,} position "
        f"increases stored; newest sequences at reconnect: funding {newest['marketStats']}, "
        f"rounds {newest['rounds']}, positions {newest['positions_total']:,} in all",
        f"{r.label} resumed: {resumed['caught_up']:,}/{resumed['resumed']:,} caught up "
        f"(p50 {_num(resumed['p50_caught_up_ms'])} ms, p99 {_num(resumed['p99_caught_up_ms'])} ms"
        f", all {_seconds(r)} s); {resumed['replayed']:,} events replayed and "
        f"{resumed['live']:,} live after them; lost {resumed['lost']}, behind "
        f"{resumed['behind']}, twice {resumed['duplicates']}, out of order {resumed['backwards']}"
        f", resets {resumed['resets']}; {resumed['failed_conns']} failed, "
        f"{resumed['sub_errors']} errors",
        f"{r.label} history reads during the storm: {reads} "
        f"({storm['reads_issued']:,} issued for {storm['distinct_pairs']:,} pairs: "
        f"{_num(storm['reads_per_pair'], 2)} a pair); server CPU {_num(r.server_cpu_s, 1)} s, "
        f"listen-queue drops {_num(r.listen_overflows)}",
    ]


def probe_text(p: dict[str, Any]) -> str:
    unanswered = p["sent"] - p["answered"]
    missing = f" ({unanswered} not answered, {p['errors']} errors)" if unanswered else ""
    return (
        f"{p['what']} {p['hz']:g}/s: {p['answered']}/{p['sent']} answered{missing}, "
        f"p50 {_probe_ms(p, 'p50_ms')}, p99 {_probe_ms(p, 'p99_ms')}, "
        f"max {_num(p['max_ms'], 1)} ms"
    )


def _probe_ms(p: dict[str, Any], key: str) -> str:
    """A probe's percentile; None when it falls on a call not answered."""
    if p[key] is None:
        return "> time-out" if p["sent"] else "-"
    return f"{p[key]:,.1f} ms"


def _ratio(ours: float | None, theirs: float | None) -> str | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return f"{ours / theirs:.2f}x"


def ratio_lines(peer: Result, results: Sequence[Result]) -> list[str]:
    """tradestream measured against ``peer``, one line (none for tradestream itself)."""
    ours = next((r for r in results if r.server == TRADESTREAM and r.error is None), None)
    if ours is None or peer.server == TRADESTREAM or peer.error is not None:
        return []
    if peer.mode == "stream":
        ratio = _ratio(ours.msgs_per_s, peer.msgs_per_s)
        what = "msgs/s"
    elif peer.mode == "idle":
        ratio = _ratio(ours.bytes_per_subscriber, peer.bytes_per_subscriber)
        what = "memory per subscriber"
    else:
        ratio = _ratio(ours.seconds, peer.seconds)
        what = "seconds to all subscribed"
        if ratio is None and peer.seconds is None:
            ratio = "n/a (the peer timed out)"
    return [f"tradestream / {peer.label}: {what} {ratio or 'n/a'}"]


def target_verdicts(name: str, results: Sequence[Result]) -> list[str]:
    ours = next((r for r in results if r.server == TRADESTREAM), None)
    if name not in TARGETS or ours is None:
        return []
    if ours.error is not None:
        return ["tradestream FAILED to run"]
    checks: list[tuple[str, bool]] = []
    if name in ("hot", "book"):
        offered = ours.offered_msgs_per_s or 0
        delivered = ours.msgs_per_s or 0
        share = delivered / offered if offered else 0.0
        checks = [
            (f"delivered {share:.0%} of {offered:,.0f}", share >= HOT_DELIVERED_SHARE),
            (
                f"p99 {_num(ours.p99_ms, 1)} ms",
                ours.p99_ms is not None and ours.p99_ms <= HOT_P99_MS,
            ),
            (f"{_failed(ours)} failed", ours.failed_conns == 0 and not ours.sub_errors),
        ]
    elif name == "idle":
        per = ours.bytes_per_subscriber
        checks = [(f"{_num(per)} bytes/subscriber", per is not None and per <= IDLE_TARGET_BYTES)]
    elif name == "storm":
        checks = [
            (f"{_seconds(ours)} s", ours.seconds is not None and ours.seconds <= STORM_SECONDS),
            (f"{_failed(ours)} failed", ours.failed_conns == 0 and not ours.sub_errors),
        ]
    elif name in ("positions", "positions-wide"):
        checks = positions_checks(ours, results)
    elif name == "resume-storm":
        checks = resume_checks(ours)
    met = all(ok for _, ok in checks)
    detail = ", ".join(f"{text} {'ok' if ok else 'MISSED'}" for text, ok in checks)
    return [f"tradestream {'MET' if met else 'MISSED'}: {detail}"]


def positions_checks(ours: Result, results: Sequence[Result]) -> list[tuple[str, bool]]:
    offered = ours.offered_msgs_per_s or 0
    delivered = ours.msgs_per_s or 0
    share = delivered / offered if offered else 0.0
    receiving = ours.receiving_conns or 0
    checks = [
        (
            f"{receiving}/{ours.asked} receiving, {_failed(ours)} failed",
            receiving == ours.asked and ours.failed_conns == 0 and not ours.sub_errors,
        ),
        (f"delivered {share:.0%} of {offered:,.0f}", share >= POSITIONS_DELIVERED_SHARE),
        (
            f"p99 {_num(ours.p99_ms, 1)} ms",
            ours.p99_ms is not None and ours.p99_ms <= POSITIONS_P99_MS,
        ),
    ]
    for p in ours.probes:
        p99 = p["p99_ms"]
        checks.append(
            (
                f"{p['name']} p99 {_probe_ms(p, 'p99_ms')}, {p['answered']}/{p['sent']} answered",
                p99 is not None and p99 <= PROBE_P99_MS and p["answered"] == p["sent"] > 0,
            )
        )
    if not ours.probes:
        checks.append(("no probe", False))
    peer = next((r for r in results if r.server != TRADESTREAM and r.error is None), None)
    if peer is not None and peer.msgs_per_s:
        ratio = delivered / peer.msgs_per_s
        checks.append((f"{ratio:.2f}x the {peer.label}", ratio >= POSITIONS_REFERENCE_RATIO))
    return checks


def resume_checks(ours: Result) -> list[tuple[str, bool]]:
    storm = ours.resume or {}
    resumed = storm.get("resumed", {})
    per_pair = storm.get("reads_per_pair")
    lost = [resumed.get(k) for k in ("lost", "behind", "duplicates", "backwards", "resets")]
    return [
        (
            f"{ours.subscribers_ok}/{ours.asked} caught up in {_seconds(ours)} s",
            ours.subscribers_ok == ours.asked
            and ours.seconds is not None
            and ours.seconds <= RESUME_CATCH_UP_S
            and ours.failed_conns == 0
            and not ours.sub_errors,
        ),
        (
            f"{_num(per_pair, 2)} history reads a pair",
            per_pair is not None and per_pair <= RESUME_READS_PER_PAIR,
        ),
        (
            f"lost {resumed.get('lost')}, behind {resumed.get('behind')}, twice "
            f"{resumed.get('duplicates')}, out of order {resumed.get('backwards')}, resets "
            f"{resumed.get('resets')}",
            all(n == 0 for n in lost),
        ),
    ]


def markdown(results: Sequence[Result], caption: str) -> str:
    header = [
        "scenario",
        "server",
        "subscribers",
        "delivered msgs/s",
        "p50 ms",
        "p99 ms",
        "failed conns",
        "RSS MB",
        "bytes/subscriber",
        "seconds to all subscribed",
    ]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r.error is not None:
            cells = [r.scenario, LABELS[r.server], str(r.asked), "error", *["-"] * 6]
        else:
            cells = [
                r.scenario,
                LABELS[r.server],
                *_measured(r),
                _num(r.bytes_per_subscriber) if r.mode == "idle" else "-",
                _seconds(r) if r.mode == "storm" else "-",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    probed = [(r, p) for r in results for p in r.probes]
    if probed:
        header = ["scenario", "server", "probe", "calls/s", "answered", "p50 ms", "p99 ms"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r, p in probed:
            cells = [
                r.scenario,
                f"{LABELS[r.server]} ({r.price_source})",
                p["what"],
                f"{p['hz']:g}",
                f"{p['answered']}/{p['sent']}",
                _probe_ms(p, "p50_ms").removesuffix(" ms"),
                _probe_ms(p, "p99_ms").removesuffix(" ms"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    stormed = [r for r in results if r.resume is not None]
    if stormed:
        header = ["scenario", "server", "caught up", "seconds to all caught up", "p99 ms"]
        header += ["lost", "history reads", "distinct (topic, cursor)", "reads/pair"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in stormed:
            storm = r.resume or {}
            resumed = storm["resumed"]
            seconds, lost, reads, per_pair = _resume_cells(r)
            cells = [
                r.scenario,
                LABELS[r.server],
                f"{resumed['caught_up']}/{r.asked}",
                seconds,
                _num(resumed["p99_caught_up_ms"]),
                lost,
                reads,
                _num(storm["distinct_pairs"]),
                per_pair,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
