"""The graceful shutdown's last step: each socket closed with when to reconnect."""

from __future__ import annotations

import random

from api.transport.shutdown import Shutdown, reconnect_reason


class _Socket:
    def __init__(self, fails: bool = False) -> None:
        self.reasons: list[str] = []
        self.fails = fails

    async def close_for_restart(self, reason: str) -> None:
        if self.fails:
            raise ConnectionResetError("gone")
        self.reasons.append(reason)


async def test_every_socket_is_closed_with_its_own_delay_within_the_spread() -> None:
    shutdown = Shutdown()
    sockets = [_Socket() for _ in range(50)]
    gone = _Socket(fails=True)
    shutdown.sockets.update([*sockets, gone])
    assert await shutdown.close_sockets(2.0, random.Random(7)) == 51
    delays = []
    for socket in sockets:
        [reason] = socket.reasons
        assert reason.startswith("Service Restart: reconnect in ")
        delays.append(int(reason.removeprefix("Service Restart: reconnect in ").split()[0]))
    assert all(0 <= d <= 2000 for d in delays)
    assert len(set(delays)) > 40
    assert reconnect_reason(1234) == "Service Restart: reconnect in 1234 ms"
    assert len(reconnect_reason(300_000).encode()) <= 123  # what a close frame's reason holds
