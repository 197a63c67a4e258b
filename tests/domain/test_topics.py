from __future__ import annotations

import pytest

from domain.events import DeliveryPolicy
from domain.topics import TopicKind, kind_of, policy_of, price_topic, topic


def test_price_topic_name() -> None:
    assert price_topic("BTC-PERP") == "price:BTC-PERP"
    assert topic(TopicKind.PRICE, "ETH-PERP") == "price:ETH-PERP"


def test_topic_without_key_is_the_bare_kind() -> None:
    assert topic(TopicKind.PRICE) == "price"


@pytest.mark.parametrize("key", ["", " ", "BTC PERP", " BTC-PERP", "BTC-PERP\n", "a\tb", "\u00a0"])
def test_bad_keys_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid topic key"):
        price_topic(key)


@pytest.mark.parametrize("name", ["price:BTC-PERP", "price", "price:SOL-PERP"])
def test_kind_and_policy_of_price_topics(name: str) -> None:
    assert kind_of(name) is TopicKind.PRICE
    assert policy_of(name) is DeliveryPolicy.LATEST_VALUE


def test_kind_of_round_trips_every_kind() -> None:
    for kind in TopicKind:
        assert kind_of(topic(kind, "key")) is kind
        assert kind_of(topic(kind)) is kind
        assert policy_of(topic(kind, "key")) is kind.policy


def test_every_kind_has_a_policy() -> None:
    assert all(isinstance(kind.policy, DeliveryPolicy) for kind in TopicKind)


@pytest.mark.parametrize("name", ["quotes:BTC-PERP", "", "Price:BTC-PERP", ":BTC-PERP"])
def test_unknown_kind_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid TopicKind"):
        kind_of(name)
    with pytest.raises(ValueError, match="is not a valid TopicKind"):
        policy_of(name)


def test_every_kind_of_topic_has_a_delivery_policy() -> None:
    for kind in TopicKind:
        assert isinstance(kind.policy, DeliveryPolicy), kind
