"""API tokens: ``tfw_<id>_<secret>``, stored as an id and a hash, always expiring.

    token, record = TokenRecord.issue(Role.PLANNER, "app/*", ttl=parse_ttl("30d"),
                                      description="nightly drift check")
    # show `token` once; store `record` (it holds only the hash)
    principal = authenticate_token(presented, lookup=store.find_token)  # None when unknown

The id is public (it names the token in logs and the audit trail); the secret is 32 random
bytes. Because the secret is 256 bits of randomness, a fast hash (SHA-256) is right: a slow
password hash only helps against guessing low-entropy secrets, and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tofuflow.errors import AuthError, ConfigError
from tofuflow.server.auth._roles import Grant, Principal, Role

__all__ = [
    "MAX_TTL",
    "TOKEN_PREFIX",
    "TokenRecord",
    "TokenRow",
    "authenticate_token",
    "hash_secret",
    "new_token",
    "parse_ttl",
    "split_token",
    "verify_secret",
]

TOKEN_PREFIX = "tfw_"  # noqa: S105 - a public prefix that makes tokens greppable, not a secret
MAX_TTL = timedelta(days=365)

_ID_LENGTH = 12
_ID_ALPHABET = string.ascii_letters + string.digits  # no '_' or '-': the id reads as a word
_SECRET_BYTES = 32
# 32 bytes in unpadded base64url are 43 characters; the secret may contain '_' and '-',
# so the token is split by position, never by '_'.
_ID = rf"{TOKEN_PREFIX}([A-Za-z0-9]{{{_ID_LENGTH}}})"  # the id: _ID_ALPHABET, _ID_LENGTH
_TOKEN_RE = re.compile(rf"{_ID}_([A-Za-z0-9_-]{{43}})")
# How a token is named where it shows: the log's tfw_<id>, the audit subject's
# token:tfw_<id>, or the whole token.
_NAMED_TOKEN = re.compile(rf"(?:token:)?{_ID}(?:_.*)?", re.DOTALL)
_BARE_ID = re.compile(rf"[A-Za-z0-9]{{{_ID_LENGTH}}}")  # the ID column of `tokens list`
_TTL_RE = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_TTL_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# One message for an unknown id and a wrong secret, so ids cannot be probed.
_INVALID = "invalid API token: check that the whole token was copied, or ask for a new one"


def new_token() -> tuple[str, str, str]:
    """Return ``(token, token_id, secret_hash)``; show the token once, store id and hash."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return f"{TOKEN_PREFIX}{token_id}_{secret}", token_id, hash_secret(secret)


def split_token(token: str) -> tuple[str, str]:
    """``split_token("tfw_<id>_<secret>") -> (id, secret)``; AuthError when malformed."""
    match = _TOKEN_RE.fullmatch(token.strip()) if isinstance(token, str) else None
    if match is None:
        # Never echo the token: a malformed one may still be someone's secret.
        raise AuthError(
            "malformed API token: expected tfw_<12-character id>_<secret>; "
            "copy the whole token shown when it was created"
        )
    return match.group(1), match.group(2)


def token_id_of(given: str) -> str:
    """The token id in what an operator copied: the id ``tokens list`` shows, ``tfw_<id>``
    as the server log, the audit log and every refusal name it, ``token:tfw_<id>`` (the
    audit subject), or the whole token (one that leaked: its secret is dropped here and
    never shown). Anything else is refused without being repeated (ConfigError)."""
    given = given.strip()
    match = _NAMED_TOKEN.fullmatch(given)
    if match:
        return match.group(1)
    if _BARE_ID.fullmatch(given):
        return given
    # Not shown: a token mangled in copying still holds most of its secret.
    raise ConfigError(
        f"what was given ({len(given)} characters, not shown) is not a token id: give the "
        f"{_ID_LENGTH}-character ID that `tofuflow server tokens list` shows, "
        f"{TOKEN_PREFIX}<id> as the server log names it, or the whole token"
    )


def hash_secret(secret: str) -> str:
    """SHA-256 hex of the secret (fast on purpose: the secret is 256 random bits)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    computed = hash_secret(secret).encode()
    # Bytes, so a non-ASCII stored value compares unequal instead of raising TypeError.
    return hmac.compare_digest(computed, stored_hash.encode())


def parse_ttl(text: str, what: str = "token lifetime") -> timedelta:
    """``parse_ttl("30d")``; units s, m, h, d; positive and at most 365 days. ``what`` the
    value is names it in the error (a setting's duration is no token's lifetime)."""
    match = _TTL_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"{text!r} is not a {what}: use a number and a unit (s, m, h, d), e.g. 90m, 12h, 30d"
        )
    ttl = timedelta(**{_TTL_UNITS[match.group(2)]: int(match.group(1))})
    if ttl <= timedelta(0):
        why = ": tokens always expire" if what == "token lifetime" else ""
        raise ConfigError(f"{what} {text!r} must be positive{why}")
    if ttl > MAX_TTL:
        raise ConfigError(f"{what} {text!r} is longer than the maximum of 365d")
    return ttl


def _utc(moment: datetime) -> datetime:
    # SQLite (through SQLAlchemy) drops tzinfo: a naive time from the store is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return _utc(now) if now is not None else datetime.now(UTC)


class TokenRow(Protocol):
    """What a stored token row provides (e.g. the SQLAlchemy model); role is a plain str."""

    @property
    def token_id(self) -> str: ...
    @property
    def secret_hash(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def workspaces(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...


@dataclass
class TokenRecord:
    """What the store keeps for an API token: its id, the secret's hash, one grant, times.

        record = TokenRecord.from_row(session.get(ApiToken, token_id))
        principal = record.authenticate(secret)

    ``description`` says who or what the token is for (e.g. "nightly drift check");
    ``expires_at`` is mandatory because tokens always expire. ``role`` may be given as a
    string (as stores return it); it is parsed into a Role.
    """

    token_id: str
    secret_hash: str
    role: Role
    workspaces: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    description: str = ""

    def __post_init__(self) -> None:
        self.role = Role.parse(self.role)  # the store hands back plain strings
        self.created_at = _utc(self.created_at)
        self.expires_at = _utc(self.expires_at)
        self.revoked_at = _utc(self.revoked_at) if self.revoked_at is not None else None

    @classmethod
    def from_row(cls, row: TokenRow) -> TokenRecord:
        """A record from a stored row (any object with the same attributes)."""
        return cls(
            token_id=row.token_id,
            secret_hash=row.secret_hash,
            role=Role.parse(row.role),
            workspaces=row.workspaces,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            description=row.description or "",
        )

    @classmethod
    def issue(
        cls,
        role: Role | str,
        workspaces: str,
        *,
        ttl: timedelta,
        description: str = "",
        now: datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """Mint a token; return ``(token, record)``. The token is shown once, never stored.

        token, record = TokenRecord.issue("planner", "app/*", ttl=parse_ttl("30d"))
        """
        if not timedelta(0) < ttl <= MAX_TTL:
            raise ConfigError(f"token lifetime {ttl} must be positive and at most 365 days")
        grant = Grant(Role.parse(role), workspaces)  # validated before a token exists
        token, token_id, secret_hash = new_token()
        created = _now(now)
        record = cls(
            token_id=token_id,
            secret_hash=secret_hash,
            role=grant.role,
            workspaces=grant.workspaces,
            created_at=created,
            expires_at=created + ttl,
            description=description,
        )
        return token, record

    @property
    def display_id(self) -> str:
        """``tfw_<id>``: the public part of the token, as shown in logs and messages."""
        return f"{TOKEN_PREFIX}{self.token_id}"

    def check(self, now: datetime | None = None) -> None:
        """Raise AuthError when the token is revoked or expired at ``now`` (default: now)."""
        moment = _now(now)
        if self.revoked_at is not None and self.revoked_at <= moment:
            raise AuthError(
                f"API token {self.display_id} was revoked at {self.revoked_at.isoformat()}; "
                "ask an admin for a new token"
            )
        if moment >= self.expires_at:
            raise AuthError(
                f"API token {self.display_id} expired at {self.expires_at.isoformat()}; "
                "ask an admin for a new token"
            )

    def revoke(self, now: datetime | None = None) -> None:
        """Mark the token revoked from ``now`` on (the caller persists the record)."""
        if self.revoked_at is None:
            self.revoked_at = _now(now)

    def authenticate(self, secret: str, now: datetime | None = None) -> Principal:
        """Check the secret, then revocation and expiry; return the token's principal.

        The secret is checked first so that a wrong secret learns nothing about the token.
        """
        if not verify_secret(secret, self.secret_hash):
            raise AuthError(_INVALID)
        self.check(now)
        return self.principal()

    def principal(self) -> Principal:
        return Principal(
            subject=f"token:{self.display_id}",
            kind="token",
            grants=(Grant(self.role, self.workspaces),),
            claims={
                "sub": f"token:{self.display_id}",
                "token_id": self.token_id,
                "description": self.description,
                "expires_at": self.expires_at.isoformat(),
            },
            token_id=self.token_id,
        )


def authenticate_token(
    token: str,
    lookup: Callable[[str], TokenRecord | None],
    now: datetime | None = None,
) -> Principal:
    """Authenticate a presented ``tfw_`` token; ``lookup(token_id)`` reads the store.

    principal = authenticate_token(bearer, lookup=store.find_token)  # None if unknown
    """
    token_id, secret = split_token(token)
    record = lookup(token_id)
    if record is None:
        hash_secret(secret)  # same work as a known id, so timing does not reveal ids
        raise AuthError(_INVALID)
    return record.authenticate(secret, now)
