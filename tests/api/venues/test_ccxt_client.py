"""Opening ccxt clients from configuration, and ccxt's errors as stable codes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from ccxt.base import errors as ccxt_errors
from pydantic import SecretStr, ValidationError

from api.feeds.paper_exchange.gateways import ExchangeGateways
from api.settings import Settings
from api.venues.ccxt_client import error_code, open_exchange, order_error, rewrite_urls

if TYPE_CHECKING:
    from pathlib import Path

KEY = "key-that-must-never-show-0123456789"
SECRET = "secret-that-must-never-show-9876543210"


def accounts(**account: object) -> str:
    return json.dumps({"alice": {"exchange": "binanceusdm", **account}})


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{not json",
        accounts(apiKeyEnv="K"),  # no secret source
        accounts(apiKeyEnv="K", apiKeyFile="/k", secretEnv="S"),  # two key sources
        accounts(apiKeyEnv="K", secretEnv="S", passphrase="x"),  # an unknown field
        json.dumps({"alice": {"exchange": "Binance USD-M", "apiKeyEnv": "K", "secretEnv": "S"}}),
    ],
)
def test_a_bad_exchange_accounts_setting_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        Settings(exchange_accounts=text)


@pytest.mark.parametrize("text", ["[]", '{"https://a": 1}', "nope"])
def test_bad_url_overrides_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        Settings(ccxt_url_overrides=text)


def test_credentials_come_from_a_file_and_a_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv("ALICE_SECRET", SECRET)
    settings = Settings(
        exchange_accounts=accounts(apiKeyFile=str(tmp_path / "key"), secretEnv="ALICE_SECRET")
    )
    [account] = settings.exchange_account_map.values()
    key, secret = account.credentials()
    assert (key.get_secret_value(), secret.get_secret_value()) == (KEY, SECRET)
    assert KEY not in repr(account.credentials())
    assert SECRET not in str(account.credentials())


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"apiKeyFile": "/nonexistent/key"}, "apiKeyFile /nonexistent/key"),
        ({"apiKeyEnv": "UNSET_KEY_X"}, "apiKeyEnv UNSET_KEY_X"),
    ],
)
def test_a_missing_credential_stops_the_start_naming_its_source(
    source: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_KEY_X", raising=False)
    monkeypatch.setenv("ALICE_SECRET", SECRET)
    settings = Settings(exchange_accounts=accounts(**source, secretEnv="ALICE_SECRET"))
    with pytest.raises(ValueError, match="EXCHANGE_ACCOUNTS") as refused:
        ExchangeGateways.open(settings, paper=None)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert SECRET not in str(refused.value)


def test_an_unknown_exchange_is_refused() -> None:
    with pytest.raises(ValueError, match="no exchange 'nosuchvenue'"):
        open_exchange("nosuchvenue")


async def test_overrides_and_sandbox_rewrite_every_url() -> None:
    exchange = open_exchange(
        "binanceusdm",
        api_key=SecretStr(KEY),
        secret=SecretStr(SECRET),
        sandbox=True,
        url_overrides={"https://testnet.binancefuture.com": "http://127.0.0.1:1"},
    )
    try:
        assert exchange.urls["api"]["fapiPrivate"].startswith("http://127.0.0.1:1/")
        assert exchange.logger.getEffectiveLevel() >= 20  # never DEBUG: ccxt logs headers there
    finally:
        await exchange.close()
    assert rewrite_urls({"a": ["wss://x/ws", 3]}, {"wss://x": "ws://y"}) == {"a": ["ws://y/ws", 3]}


MARGIN = 'binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ccxt_errors.InsufficientFunds(MARGIN), "INSUFFICIENT_BALANCE"),
        (ccxt_errors.OperationFailed(MARGIN), "INSUFFICIENT_BALANCE"),
        (ccxt_errors.BadSymbol("binanceusdm does not have market symbol X"), "UNKNOWN_SYMBOL"),
        (
            ccxt_errors.ExchangeError('binanceusdm {"code":-1121,"msg":"Invalid symbol."}'),
            "UNKNOWN_SYMBOL",
        ),
        (
            ccxt_errors.ExchangeError('binanceusdm {"code":-1003,"msg":"Too many requests."}'),
            "RATE_LIMITED",
        ),
        (ccxt_errors.DDoSProtection("binanceusdm 429 Too Many Requests"), "RATE_LIMITED"),
        (
            ccxt_errors.ExchangeError('binanceusdm {"code":-1001,"msg":"Internal error"}'),
            "EXCHANGE_UNAVAILABLE",
        ),
        (
            ccxt_errors.ExchangeNotAvailable("binanceusdm GET http://h/?signature=abc 503"),
            "EXCHANGE_UNAVAILABLE",
        ),
        (ccxt_errors.RequestTimeout("binanceusdm GET http://h/ timed out"), "EXCHANGE_UNAVAILABLE"),
        (ccxt_errors.InvalidOrder('binanceusdm {"code":-1111,"msg":"Precision"}'), "INVALID_ORDER"),
        (
            ccxt_errors.AuthenticationError('binanceusdm {"code":-2015,"msg":"Invalid API-key"}'),
            "EXCHANGE_REJECTED",
        ),
    ],
)
def test_ccxt_errors_have_stable_codes_and_our_messages(error: Exception, code: str) -> None:
    assert error_code(error) == code
    refused = order_error(error)
    assert refused.code == code
    assert "binanceusdm" not in str(refused)
    assert "signature" not in str(refused)
