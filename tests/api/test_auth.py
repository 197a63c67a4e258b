"""Token verification: every refusal the auth layer promises, with HS256, RS256, ES256 and JWKS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from api.auth import (
    AuthenticationError,
    Role,
    TokenVerifier,
    bearer_token,
    development_secret,
    mint,
    parse_ttl,
)
from api.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "a-test-secret-that-is-long-enough-for-hs256-hs384-and-hs512-0123456789"
NOW = datetime.now(UTC)
"""When this module was imported: tokens made at import expire a day later, so a test may run
long after collection; a test about a few seconds of leeway reads the clock itself."""


def hs256(**overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"issuer": None, "audience": None, "leeway_s": 0.0, **overrides}
    return TokenVerifier([(SECRET, "HS256", None)], **options)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "role": "user", "exp": NOW + timedelta(days=1)}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_good_token_names_its_caller() -> None:
    token = mint(SECRET, sub="alice", role=Role.ADMIN, ttl=timedelta(minutes=5))
    principal = hs256().verify(token)
    assert (principal.sub, principal.role, principal.scope) == ("alice", Role.ADMIN, "admin:alice")
    assert principal.expires_at is not None
    assert principal.expires_at > NOW


def test_role_defaults_to_user() -> None:
    token = jwt.encode(claims(role=None), SECRET, algorithm="HS256")
    assert hs256().verify(token).role is Role.USER


@pytest.mark.parametrize(
    ("token_claims", "key", "algorithm", "reason"),
    [
        (claims(), SECRET[::-1], "HS256", "Signature"),
        (claims(exp=NOW - timedelta(seconds=5)), SECRET, "HS256", "token expired"),
        (claims(nbf=NOW + timedelta(days=1)), SECRET, "HS256", "not valid yet"),
        (claims(sub=None), SECRET, "HS256", "no 'sub' claim"),
        (claims(exp=None), SECRET, "HS256", "no 'exp' claim"),
        (claims(sub=""), SECRET, "HS256", "non-empty"),
        (claims(role="root"), SECRET, "HS256", "unknown role 'root'"),
        (claims(), SECRET, "HS384", "accepts HS256"),
    ],
    ids=[
        "bad-signature",
        "expired",
        "not-yet-valid",
        "no-sub",
        "no-exp",
        "empty-sub",
        "bad-role",
        "wrong-alg",
    ],
)
def test_refusals(token_claims: dict[str, Any], key: str, algorithm: str, reason: str) -> None:
    token = jwt.encode(token_claims, key, algorithm=algorithm)
    with pytest.raises(AuthenticationError, match=reason):
        hs256().verify(token)


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    with pytest.raises(AuthenticationError, match="accepts HS256"):
        hs256().verify(token)


def test_garbage_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthenticationError, match="malformed") as refused:
        hs256().verify("not-a.jwt-at-all")
    assert "not-a.jwt" not in str(refused.value)


def test_issuer_audience_and_leeway() -> None:
    token = jwt.encode(claims(iss="tradestream", aud="dashboards"), SECRET, algorithm="HS256")
    assert hs256(issuer="tradestream", audience="dashboards").verify(token).sub == "alice"
    with pytest.raises(AuthenticationError, match="issuer"):
        hs256(issuer="someone-else").verify(token)
    with pytest.raises(AuthenticationError, match=r"(?i)audience"):
        hs256(audience="others").verify(token)
    late = jwt.encode(
        claims(exp=datetime.now(UTC) - timedelta(seconds=5)), SECRET, algorithm="HS256"
    )
    assert hs256(leeway_s=30).verify(late).sub == "alice"


def pem(private_key: Any) -> str:
    public_key = private_key.public_key()
    encoded: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode()


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
    ids=["RS256", "ES256"],
)
def test_public_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_key: Any, algorithm: str
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem(private_key))
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", str(key_file))
    verifier = TokenVerifier.from_settings(Settings())
    good = jwt.encode(claims(), private_key, algorithm=algorithm)
    assert verifier.verify(good).sub == "alice"
    # The public key used as an HMAC secret (the key-confusion attack) is refused.
    forged = jwt.encode(claims(), SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationError, match=f"accepts {algorithm}"):
        verifier.verify(forged)


def test_jwks_file_picks_the_key_by_kid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(first.public_key())), "kid": "rsa-1", "alg": "RS256"},
        {**json.loads(ECAlgorithm.to_jwk(second.public_key())), "kid": "ec-1", "alg": "ES256"},
    ]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys}))
    monkeypatch.setenv("JWT_JWKS_FILE", str(jwks))
    verifier = TokenVerifier.from_settings(Settings())
    by_ec = jwt.encode(claims(sub="bob"), second, algorithm="ES256", headers={"kid": "ec-1"})
    assert verifier.verify(by_ec).sub == "bob"
    wrong_kid = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "nope"})
    with pytest.raises(AuthenticationError, match="no key with id 'nope'"):
        verifier.verify(wrong_kid)
    swapped = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "rsa-1"})
    with pytest.raises(AuthenticationError):
        verifier.verify(swapped)


def test_bearer_header() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in ("abc", "Basic abc", "Bearer ", ""):
        with pytest.raises(AuthenticationError, match="Bearer"):
            bearer_token(bad)


def test_production_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "JWT_JWKS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="ENVIRONMENT=production needs JWT_SECRET"):
        Settings()
    monkeypatch.setenv("JWT_SECRET", SECRET)
    assert Settings().environment == "production"


def test_only_one_key_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("JWT_JWKS_FILE", str(tmp_path / "jwks.json"))
    with pytest.raises(ValidationError, match="not several"):
        Settings()


def test_development_secret_is_made_once_and_private(tmp_path: Path) -> None:
    secret = development_secret(tmp_path / "data")
    assert development_secret(tmp_path / "data") == secret
    assert len(secret) >= 48
    assert (tmp_path / "data" / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_ttl() -> None:
    assert parse_ttl("90s") == timedelta(seconds=90)
    assert parse_ttl("1h") == timedelta(hours=1)
    assert parse_ttl("7d") == timedelta(days=7)
    with pytest.raises(ValueError, match="such as 1h"):
        parse_ttl("1 hour")


def test_production_wants_a_long_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "short")
    with pytest.raises(ValidationError, match="at least 32 bytes in production"):
        Settings()
