from __future__ import annotations

import pytest

from api.auth import ANONYMOUS, Principal, Role
from api.transport.slots import (
    ConnectionSlots,
    Refusal,
    address_key,
    client_key,
    default_max_connections,
    default_max_per_client,
)


def test_the_process_limit_comes_before_the_client_limit_and_both_are_counted() -> None:
    slots = ConnectionSlots(max_total=3, max_per_client=2)
    a1, a2 = slots.take("a", "ws"), slots.take("a", "sse")
    assert slots.take("a", "multipart") is Refusal.CLIENT
    b1 = slots.take("b", "sse")
    assert slots.take("c", "ws") is Refusal.PROCESS
    assert slots.take("a", "sse") is Refusal.PROCESS  # full: the process limit answers first
    assert (slots.open, slots.clients, dict(slots.by_transport)) == (
        3,
        2,
        {"ws": 1, "sse": 2, "multipart": 0},
    )
    assert slots.refused == {
        ("multipart", Refusal.CLIENT): 1,
        ("ws", Refusal.PROCESS): 1,
        ("sse", Refusal.PROCESS): 1,
    }
    for slot in (a1, a2, b1):
        assert not isinstance(slot, Refusal)
        slot.release()
        slot.release()  # once only, however often it is called
    assert (slots.open, slots.clients, sum(slots.by_transport.values())) == (0, 0, 0)


def test_a_slot_moves_to_its_user_only_if_the_user_has_room() -> None:
    slots = ConnectionSlots(max_total=10, max_per_client=1)
    held = slots.take("user:alice", "sse")
    socket = slots.take("address:127.0.0.1", "ws")
    assert not isinstance(socket, Refusal)
    assert not socket.move_to("user:alice")
    assert (socket.client, slots.held_by("address:127.0.0.1")) == ("address:127.0.0.1", 1)
    assert socket.move_to("user:bob")
    assert slots.held_by("address:127.0.0.1") == 0
    assert slots.held_by("user:bob") == 1
    socket.release()
    assert not isinstance(held, Refusal)
    held.release()
    assert slots.clients == 0


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("203.0.113.7", 5000), "address:203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 5000), "address:2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 5000), "address:2001:db8:1:2::/64"),  # the same /64
        (("::ffff:203.0.113.7", 5000), "address:203.0.113.7"),
        (None, "address:unknown"),
    ],
)
def test_anonymous_callers_count_by_address(client: tuple[str, int] | None, key: str) -> None:
    assert address_key({"client": client}) == key
    assert client_key({"client": client}, ANONYMOUS) == key


def test_signed_in_callers_count_by_user_whatever_their_address() -> None:
    alice = Principal(sub="alice", role=Role.USER)
    assert client_key({"client": ("203.0.113.7", 1)}, alice) == "user:alice"
    assert client_key({"client": ("198.51.100.1", 2)}, alice) == "user:alice"


@pytest.mark.parametrize(
    ("files", "total", "per_client"),
    [
        (None, 20_000, 200),
        (1_048_576, 20_000, 200),
        (4096, 3072, 200),
        (1024, 768, 192),
        (512, 384, 96),
        (8, 6, 1),
    ],
)
def test_default_limits_stay_below_the_open_files_limit(
    files: int | None, total: int, per_client: int
) -> None:
    assert default_max_connections(files) == total
    assert default_max_per_client(total) == per_client
