"""Authentication: JSON Web Tokens, verified with a shared secret (HS256), a public key file
(RS256, ES256) or a JWKS file.

    AuthenticationError       the token is missing where required, malformed, or refused
                              (bad signature, wrong algorithm, expired, not yet valid, wrong
                              issuer or audience, no ``sub``, unknown role, a time claim that
                              is no number of seconds): HTTP 401 or close 4403

A request without a token is anonymous and reaches public feeds only.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from pathlib import Path

    from api.settings import Settings

logger = logging.getLogger(__name__)

DEV_SECRET_FILE = "jwt-secret"
"""Under DATA_DIR: the development secret made when no key is configured outside production."""


class Role(enum.Enum):
    USER = "user"
    """Its ``sub`` is the user or wallet address; it reads its own private streams."""
    SERVICE = "service"
    """May publish and ingest."""
    ADMIN = "admin"
    """May read every user's streams."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``sub`` is None for anonymous callers."""

    sub: str | None
    role: Role | None
    expires_at: datetime | None = None

    @property
    def anonymous(self) -> bool:
        return self.sub is None

    @property
    def scope(self) -> str:
        """What this caller may see, as a string: callers with equal scopes see the same."""
        if self.sub is None or self.role is None:
            return "anonymous"
        return f"{self.role.value}:{self.sub}"


ANONYMOUS = Principal(sub=None, role=None)


class AuthenticationError(Exception):
    """A token was given and refused; the message says why (never echoing the token)."""


class TokenVerifier:
    """Verifies tokens with the key the settings name: one algorithm family, never ``none``."""

    def __init__(
        self,
        keys: list[tuple[Any, str, str | None]],
        *,
        issuer: str | None,
        audience: str | None,
        leeway_s: float,
    ) -> None:
        """``keys``: (key, algorithm, key id) triples; a token must name a key id when several
        keys are given."""
        if not keys:
            raise ValueError("no verification key")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            load_keys(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
        )

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"malformed token: {exc}") from None
        key, algorithm = self._key_for(header)
        if header.get("alg") != algorithm:
            raise AuthenticationError(
                f"token signed with {_clip(header.get('alg'))}; this server accepts {algorithm}"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"token refused: {exc}") from None
        return _principal(claims)

    def deadline(self, principal: Principal) -> float | None:
        """When (Unix seconds) the caller's token stops being accepted: its ``exp`` plus the
        leeway that let it in, since clocks disagree both ways. None for tokens without end."""
        if principal.expires_at is None:
            return None
        return principal.expires_at.timestamp() + self.leeway_s

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        if len(self.keys) == 1:
            key, algorithm, _ = self.keys[0]
            return key, algorithm
        kid = header.get("kid")
        for key, algorithm, key_id in self.keys:
            if key_id == kid:
                return key, algorithm
        raise AuthenticationError(f"no key with id {_clip(kid)}")


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthenticationError("token 'sub' must be a non-empty string")
    if "\x00" in sub:  # it names the caller's rows, and PostgreSQL text cannot hold NUL
        raise AuthenticationError("token 'sub' must not contain NUL (U+0000)")
    raw_role = claims.get("role", Role.USER.value)
    try:
        role = Role(raw_role)
    except ValueError:
        raise AuthenticationError(f"unknown role {_clip(raw_role)}") from None
    for claim in ("nbf", "iat"):
        if claim in claims:
            _numeric_date(claims, claim)
    expires_at = datetime.fromtimestamp(_numeric_date(claims, "exp"), UTC)
    return Principal(sub=sub, role=role, expires_at=expires_at)


MAX_NUMERIC_DATE = 253402300799
"""9999-12-31T23:59:59Z, the last second a ``datetime`` holds."""


def _numeric_date(claims: dict[str, Any], claim: str) -> float:
    """A time claim as RFC 7519 has it: a JSON number of seconds since the epoch. PyJWT reads
    ``int(value)``, so it lets a string of digits through, and ``1e20`` is past any date."""
    value = claims[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthenticationError(f"token {claim!r} must be a number, not {_clip(value)}")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise AuthenticationError(
            f"token {claim!r} must be from 0 to {MAX_NUMERIC_DATE} (seconds since 1970), "
            f"not {_clip(value)}"
        )
    return float(value)


def _clip(value: object, limit: int = 40) -> str:
    """A caller's value, quoted and cut short: refusals name it without echoing a payload."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` value."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization must be 'Bearer <token>'")
    return token.strip()


def load_keys(settings: Settings) -> list[tuple[Any, str, str | None]]:
    """The verification keys the settings configure (one source; the settings check that)."""
    if settings.jwt_jwks_file is not None:
        jwks = json.loads(settings.jwt_jwks_file.read_text(encoding="utf-8"))
        keys = []
        for entry in jwks.get("keys", []):
            jwk = jwt.PyJWK(entry)
            keys.append((jwk.key, jwk.algorithm_name, entry.get("kid")))
        if not keys:
            raise ValueError(f"{settings.jwt_jwks_file}: no keys")
        return keys
    if settings.jwt_public_key_file is not None:
        pem = settings.jwt_public_key_file.read_text(encoding="utf-8")
        return [_public_key(pem)]
    if settings.jwt_secret is not None:
        return [(settings.jwt_secret, "HS256", None)]
    raise ValueError("no JWT key configured")


def _public_key(pem: str) -> tuple[Any, str, str | None]:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    if isinstance(key, RSAPublicKey):
        return key, "RS256", None
    if isinstance(key, EllipticCurvePublicKey):
        return key, "ES256", None
    raise ValueError("JWT_PUBLIC_KEY_FILE holds no RSA or EC public key")


def development_secret(data_dir: Path) -> str:
    """The development secret under ``data_dir``, made (readable by its owner only) if absent."""
    path = data_dir / DEV_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
        logger.warning("made a development JWT secret in %s", path)
    return path.read_text(encoding="utf-8").strip()


def mint(
    secret_or_key: Any,
    *,
    sub: str,
    role: Role,
    ttl: timedelta,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {"sub": sub, "role": role.value, "iat": now, "exp": now + ttl}
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret_or_key, algorithm=algorithm)


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"TTL {text!r}: use a number and s, m, h or d, such as 1h")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
