"""Verifying OIDC ID tokens (Azure DevOps, GitHub Actions, any issuer with a JWKS).

    verifier = OidcVerifier([Issuer("https://vstoken.dev.azure.com/<org id>",
                                    "api://AzureADTokenExchange",
                                    "https://vstoken.dev.azure.com/<org id>/.well-known/jwks")])
    claims = verifier.verify(bearer_token)      # AuthError with the reason when refused

Order matters: the unverified ``iss`` only picks which trusted issuer's rules apply; the
algorithm is checked against that issuer's allow-list before any key is looked up, so
``alg: none`` and HMAC tokens forged with a public key never reach a key. Only then is the
signature verified, and the claims after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from tofuflow.errors import AuthError, ConfigError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "Issuer",
    "OidcVerifier",
    "issuers_from_config",
]

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
# Only asymmetric algorithms: a JWKS holds public keys, and a public key used as an HMAC
# secret is known to everyone ("none" and HS* are refused in config and in tokens).
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})  # never "oct": symmetric keys are never trusted
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_TOKEN_CHARS = 16 * 1024  # ID tokens are ~1-2 KiB; refuse huge inputs before parsing
_MAX_JWKS_BYTES = 1024 * 1024
_ISSUER_KEYS = frozenset({"issuer", "audience", "jwks_url", "algorithms"})


@dataclass(frozen=True)
class Issuer:
    """A trusted OIDC issuer: its exact ``iss``, accepted audience(s), JWKS URL, algorithms.

    Issuer("https://token.actions.githubusercontent.com", "api://tofuflow",
           "https://token.actions.githubusercontent.com/.well-known/jwks")

    ``audience`` is stored as a tuple; a token is accepted if any of its ``aud`` values is
    one of them. ``jwks_url`` must be https (plain http only to a loopback address).
    """

    issuer: str
    audience: str | Sequence[str]
    jwks_url: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer.strip():
            raise ConfigError("an OIDC issuer needs its exact `iss` value, e.g. an https URL")
        object.__setattr__(self, "audience", _audiences(self.issuer, self.audience))
        object.__setattr__(self, "algorithms", _algorithms(self.issuer, self.algorithms))
        _check_jwks_url(self.issuer, self.jwks_url)

    @property
    def audiences(self) -> tuple[str, ...]:
        return tuple(self.audience)


def _audiences(issuer: str, audience: object) -> tuple[str, ...]:
    values = _strings(audience)
    if not values:
        raise ConfigError(
            f"issuer {issuer}: audience must be a non-empty string or list of strings, "
            "e.g. api://AzureADTokenExchange"
        )
    return values


def _algorithms(issuer: str, algorithms: object) -> tuple[str, ...]:
    values = _strings(algorithms)
    refused = [a for a in values if a not in ALLOWED_ALGORITHMS] if values else [algorithms]
    if refused:
        allowed = ", ".join(sorted(ALLOWED_ALGORITHMS))
        raise ConfigError(
            f"issuer {issuer}: algorithm {refused[0]!r} refused; only asymmetric algorithms "
            f"verify with public keys ('none' and HS* never): use some of {allowed}"
        )
    return values


def _strings(value: object) -> tuple[str, ...]:
    """A string or a list of non-empty strings as a tuple; () when it is neither."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) and v for v in values):
        return ()
    return tuple(values)


def _check_jwks_url(issuer: str, url: object) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.hostname or parts.scheme not in ("https", "http"):
        raise ConfigError(f"issuer {issuer}: jwks_url {url!r} is not an http(s) URL")
    # Keys fetched over plain http could be swapped in transit: allowed for loopback only.
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ConfigError(f"issuer {issuer}: jwks_url must use https, not {url}")


def issuers_from_config(entries: Sequence[Mapping[str, Any]]) -> list[Issuer]:
    """Issuers from config dicts (keys: issuer, audience, jwks_url, optional algorithms).

    issuers_from_config([{"issuer": "...", "audience": "api://tofuflow", "jwks_url": "..."}])
    """
    issuers = []
    for index, entry in enumerate(entries):
        where = f"oidc issuers[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with issuer, audience, jwks_url")
        unknown = sorted(set(entry) - _ISSUER_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; use {sorted(_ISSUER_KEYS)}")
        missing = [key for key in ("issuer", "audience", "jwks_url") if key not in entry]
        if missing:
            raise ConfigError(f"{where}.{missing[0]} is required")
        try:
            issuers.append(Issuer(**dict(entry)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return issuers


@dataclass
class _KeySet:
    keys: tuple[dict[str, Any], ...]
    fetched_at: float
    refetched_at: float | None  # the last refetch forced by an unknown kid


class OidcVerifier:
    """Verifies ID tokens from the configured issuers; safe to share between threads.

        verifier = OidcVerifier(issuers, leeway=60)
        claims = verifier.verify(token)

    JWKS documents are cached per URL for ``jwks_ttl`` seconds. A token whose ``kid`` is
    not in the cache triggers one refetch (the issuer may have rotated its keys), at most
    once per ``refetch_interval`` seconds per URL, so forged kids cannot flood the issuer.
    """

    def __init__(
        self,
        issuers: Sequence[Issuer],
        *,
        leeway: int = 60,
        http: httpx.Client | None = None,
        jwks_ttl: float = 300,
        refetch_interval: float = 30,
    ) -> None:
        self._issuers: dict[str, Issuer] = {}
        for issuer in issuers:
            if issuer.issuer in self._issuers:
                raise ConfigError(f"issuer {issuer.issuer} is configured twice: merge them")
            self._issuers[issuer.issuer] = issuer
        if leeway < 0 or jwks_ttl < 0 or refetch_interval < 0:
            raise ConfigError("leeway, jwks_ttl and refetch_interval must not be negative")
        self._leeway = leeway
        self._jwks_ttl = jwks_ttl
        self._refetch_interval = refetch_interval
        self._owns_http = http is None
        # No redirects: the configured jwks_url is the one trusted location of the keys.
        self._http = http or httpx.Client(timeout=5.0, follow_redirects=False)
        self._cache: dict[str, _KeySet] = {}
        # A lock per JWKS URL, held while fetching: concurrent misses cause one fetch, and
        # an issuer that is slow or down does not hold up tokens from the others.
        self._locks = {issuer.jwks_url: threading.Lock() for issuer in self._issuers.values()}

    def close(self) -> None:
        """Close the HTTP client if the verifier created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OidcVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims of ``token``; AuthError with the reason otherwise."""
        header, unverified = _peek(token)
        issuer = self._issuer_for(unverified)
        alg = _allowed_algorithm(header, issuer)
        key = _public_key(self._jwk_for(issuer, header.get("kid")), alg, issuer)
        return _decode(token, key, issuer, self._leeway, unverified)

    def _issuer_for(self, unverified: Mapping[str, Any]) -> Issuer:
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("token has no 'iss' claim: present an OIDC ID token")
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise AuthError(
                f"issuer {_shown(iss)} is not trusted: present a token from a configured "
                "issuer, or add this issuer to the server's OIDC configuration"
            )
        return issuer

    def _jwk_for(self, issuer: Issuer, kid: object) -> dict[str, Any]:
        with self._locks[issuer.jwks_url]:
            keys, fresh = self._keys(issuer, force=False)
            jwk = _select(keys, kid, issuer)
            if jwk is None and not fresh and self._may_refetch(issuer.jwks_url):
                keys, _ = self._keys(issuer, force=True)
                jwk = _select(keys, kid, issuer)
        if jwk is None:
            raise AuthError(
                f"no key with kid {_shown(kid)} in the keys of issuer {issuer.issuer}: the "
                "token was not signed by this issuer, or its keys changed; retry shortly"
            )
        return jwk

    def _keys(self, issuer: Issuer, *, force: bool) -> tuple[tuple[dict[str, Any], ...], bool]:
        """The issuer's keys and whether they were fetched just now."""
        url = issuer.jwks_url
        entry = self._cache.get(url)
        now = time.monotonic()
        if entry is not None and not force and now - entry.fetched_at < self._jwks_ttl:
            return entry.keys, False
        keys = _fetch_keys(self._http, issuer)
        refetched_at = now if force else (entry.refetched_at if entry else None)
        self._cache[url] = _KeySet(keys, now, refetched_at)
        return keys, True

    def _may_refetch(self, url: str) -> bool:
        entry = self._cache.get(url)
        last = entry.refetched_at if entry else None
        return last is None or time.monotonic() - last >= self._refetch_interval


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and claims: only to choose the issuer and the algorithm."""
    if not isinstance(token, str) or not token:
        raise AuthError("no token presented: send an OIDC ID token as the bearer credential")
    if len(token) > _MAX_TOKEN_CHARS:
        raise AuthError(f"token refused: longer than {_MAX_TOKEN_CHARS} characters")
    if token.count(".") != 2:
        raise AuthError("malformed token: expected a signed JWT (header.payload.signature)")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(f"malformed token: {exc}") from None
    return header, claims


def _allowed_algorithm(header: Mapping[str, Any], issuer: Issuer) -> str:
    alg = header.get("alg")
    if isinstance(alg, str) and alg in issuer.algorithms:
        return alg
    if isinstance(alg, str) and alg.lower() == "none":
        reason = "unsigned tokens (alg none) are never accepted"
    elif isinstance(alg, str) and alg.upper().startswith("HS"):
        reason = f"symmetric algorithm {alg} is never accepted for OIDC tokens"
    else:
        reason = f"algorithm {_shown(alg)} is not allowed"
    allowed = ", ".join(issuer.algorithms)
    raise AuthError(f"{reason}: issuer {issuer.issuer} signs with one of {allowed}")


def _select(keys: Sequence[dict[str, Any]], kid: object, issuer: Issuer) -> dict[str, Any] | None:
    if kid is None:
        # Some issuers omit kid; that is only unambiguous when they publish one key.
        if len(keys) == 1:
            return keys[0]
        raise AuthError(
            f"token has no 'kid' header and issuer {issuer.issuer} publishes {len(keys)} "
            "keys: the issuer must name the signing key"
        )
    return next((key for key in keys if key.get("kid") == kid), None)


def _public_key(jwk: Mapping[str, Any], alg: str, issuer: Issuer) -> jwt.PyJWK:
    kid = _shown(jwk.get("kid"))
    declared = jwk.get("alg")
    # A JWK that names its algorithm may be used with that algorithm only (RFC 7517 4.4).
    if declared is not None and declared != alg:
        raise AuthError(f"key {kid} of issuer {issuer.issuer} is for {declared}, token says {alg}")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg)
    except jwt.PyJWTError:
        kty = _shown(jwk.get("kty"))
        raise AuthError(
            f"key {kid} of issuer {issuer.issuer} is a {kty} key and cannot verify {alg}"
        ) from None


def _fetch_keys(http: httpx.Client, issuer: Issuer) -> tuple[dict[str, Any], ...]:
    url = issuer.jwks_url
    try:
        response = http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > _MAX_JWKS_BYTES:
            raise ValueError("the document is larger than 1 MiB")
        keys = _usable_keys(response.json())
    except httpx.HTTPStatusError as exc:
        reason = f"HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    except ValueError as exc:  # includes JSON decoding errors
        reason = str(exc) or "the response is not a JWKS document"
    else:
        if keys:
            return keys
        reason = "it publishes no usable signing keys"
    raise AuthError(
        f"the keys of issuer {issuer.issuer} could not be fetched from {url} ({reason}): "
        "check the issuer's jwks_url and that the server can reach it"
    )


def _usable_keys(document: object) -> tuple[dict[str, Any], ...]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('the response is not a JWKS document ({"keys": [...]})')
    return tuple(key for key in document["keys"] if _usable(key))


def _usable(key: object) -> bool:
    if not isinstance(key, dict) or key.get("kty") not in _KEY_TYPES:
        return False
    if key.get("use", "sig") != "sig":
        return False  # encryption keys are not signing keys
    try:
        jwt.PyJWK(key)
    except jwt.PyJWTError:
        return False  # an unsupported key must not make the issuer's other keys unusable
    return True


def _decode(
    token: str,
    key: jwt.PyJWK,
    issuer: Issuer,
    leeway: int,
    unverified: Mapping[str, Any],
) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=list(issuer.algorithms),
            audience=list(issuer.audiences),
            issuer=issuer.issuer,
            leeway=leeway,
            options={
                "require": ["exp", "sub", "iss", "aud"],
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.PyJWTError as exc:
        raise AuthError(_reason(exc, issuer, unverified)) from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise AuthError("token has an empty 'sub' claim: the issuer must name the subject")
    return claims


def _reason(exc: jwt.PyJWTError, issuer: Issuer, claims: Mapping[str, Any]) -> str:
    """A precise, token-free reason for a refused token, ending with what to do."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return (
            f"token expired at {_when(claims.get('exp'))}: request a fresh token from the "
            "pipeline's identity provider"
        )
    if isinstance(exc, jwt.ImmatureSignatureError):
        field = "nbf" if "(nbf)" in str(exc) else "iat"
        return (
            f"token not yet valid ({field} {_when(claims.get(field))}): check the clocks "
            "of the issuer and of this server"
        )
    if isinstance(exc, jwt.InvalidAudienceError):
        expected = " or ".join(issuer.audiences)
        return (
            f"audience mismatch: expected {expected}, got {_shown(claims.get('aud'))}: "
            f"request the token for audience {issuer.audiences[0]}"
        )
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim: the issuer must include it"
    if isinstance(exc, jwt.InvalidSignatureError):
        return f"signature verification failed: the token was not signed by {issuer.issuer}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"issuer mismatch: expected {issuer.issuer}"
    if isinstance(exc, jwt.InvalidKeyError):
        return f"the signing key of issuer {issuer.issuer} is refused: {exc}"
    if isinstance(exc, jwt.DecodeError):
        return f"malformed token: {exc}"
    return f"invalid token: {exc}"


def _when(timestamp: object) -> str:
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        try:
            return datetime.fromtimestamp(timestamp, UTC).isoformat()
        except (ValueError, OverflowError, OSError):
            pass
    return _shown(timestamp)


def _shown(value: object) -> str:
    """An untrusted value for a message: repr'd (no control characters) and bounded."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
