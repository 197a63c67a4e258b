"""The admins' summary of every strategy: one entry per status in a fixed order, zeros for a
status no strategy has, profit/loss from the totals, and its wire format pinned byte for byte
(events of other versions read it)."""

from __future__ import annotations

from decimal import Decimal

import orjson

from domain.martingale import StrategyStatus
from domain.martingale_summary import SUMMARY, StatusTotals, Summary

D = Decimal


def test_every_status_is_shown_in_order_with_zeros_for_those_no_strategy_has() -> None:
    stopped = StatusTotals(StrategyStatus.STOPPED, 2, D("3.5"), D("1.25"), D("2"))
    summary = Summary.of({StrategyStatus.STOPPED: stopped}, 9)
    assert [t.status for t in summary.statuses] == list(StrategyStatus)
    assert summary.statuses[2] == stopped
    assert summary.statuses[0] == StatusTotals(StrategyStatus.ACTIVE, 0, D(0), D(0), D(0))
    assert stopped.profit_loss_sol == D("-2.25")
    assert Summary.of({}, None).last_settled_round is None


GOLDEN = (
    '{"statuses":[{"status":"active","strategies":3,"totalDeployedSol":"3.000000000","totalRewar'
    'dsSol":"4.5","totalLossSol":"1.000000000","profitLossSol":"1.500000000"},{"status":"complete'
    'd","strategies":0,"totalDeployedSol":"0","totalRewardsSol":"0","totalLossSol":"0","profitLos'
    'sSol":"0"},{"status":"stopped","strategies":0,"totalDeployedSol":"0","totalRewardsSol":"0","t'
    'otalLossSol":"0","profitLossSol":"0"},{"status":"stopped_out","strategies":1,"totalDeployedSo'
    'l":"7","totalRewardsSol":"0","totalLossSol":"7","profitLossSol":"-7"}],"lastSettledRound":42}'
)


def summary() -> Summary:
    active = StatusTotals(StrategyStatus.ACTIVE, 3, D("3.000000000"), D("4.5"), D("1.000000000"))
    out = StatusTotals(StrategyStatus.STOPPED_OUT, 1, D(7), D(0), D(7))
    return Summary.of({StrategyStatus.ACTIVE: active, StrategyStatus.STOPPED_OUT: out}, 42)


def test_the_summary_payload_is_unchanged_and_reads_back() -> None:
    assert orjson.dumps(SUMMARY.encode(summary())).decode() == GOLDEN
    assert SUMMARY.decode(orjson.loads(GOLDEN)) == summary()
