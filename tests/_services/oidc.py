"""A local OIDC issuer: its JWKS served over real HTTP on 127.0.0.1, tokens minted with PyJWT.

    with LocalIssuer(audience="api://tofuflow") as issuer:
        verifier = OidcVerifier([issuer.trusted()])
        claims = verifier.verify(issuer.mint(sub="sc://contoso/infra/plan"))
        issuer.jwks_requests                        # how often the JWKS was fetched
        issuer.rotate_key()                         # a new RSA signing key (new kid)
        issuer.status = 503                         # the JWKS endpoint fails

``issuer`` may be any ``iss`` (e.g. an Azure DevOps URL) while the keys are served locally.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tofuflow.server.auth import Issuer

JWKS_PATH = "/.well-known/jwks"
DISCOVERY_PATH = "/.well-known/openid-configuration"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key`` (no ``alg``: verifiers must take it from the token)."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


class LocalIssuer:
    """An OIDC issuer for tests: an RSA signing key (and an EC one), a JWKS endpoint."""

    def __init__(
        self,
        *,
        issuer: str | None = None,
        audience: str = "api://tofuflow",
        ec_key: bool = True,
    ) -> None:
        self.audience = audience
        self.status = 200  # what the JWKS endpoint answers; set 5xx to simulate an outage
        self._issuer = issuer
        self._lock = threading.Lock()
        self._jwks_requests = 0
        self._keys: dict[str, PrivateKey] = {}
        self._signing: dict[str, str] = {}  # "RSA"/"EC" -> kid
        self._add("RSA", new_rsa_key())
        if ec_key:
            self._add("EC", new_ec_key())
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll interval: stop() waits for one poll, and tests stop many issuers.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; the JWKS URL then refuses connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalIssuer is not started: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    @property
    def issuer(self) -> str:
        """The ``iss`` of minted tokens: the one given, or the server's URL."""
        return self._issuer or self.url

    @property
    def jwks_requests(self) -> int:
        with self._lock:
            return self._jwks_requests

    def trusted(self, **overrides: Any) -> Issuer:
        """The ``Issuer`` a verifier needs to trust this issuer."""
        config: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "jwks_url": self.jwks_url,
        }
        return Issuer(**{**config, **overrides})

    # -- keys and tokens ---------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The kid of the current RSA signing key."""
        return self._signing["RSA"]

    @property
    def public_pem(self) -> bytes:
        """The current RSA public key as PEM (what an attacker can download)."""
        return (
            self._keys[self.kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def rotate_key(self, *, keep_old: bool = False) -> str:
        """Sign with a new RSA key from now on; the old key leaves the JWKS unless kept."""
        old = self.kid
        kid = self._add("RSA", new_rsa_key())
        if not keep_old:
            with self._lock:
                del self._keys[old]
        return kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [public_jwk(key, kid) for kid, key in self._keys.items()]}

    def claims(self, **claims: Any) -> dict[str, Any]:
        """Default claims (valid for 10 minutes) updated with ``claims``; None removes one."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "sc://tofuflow/tests/local",
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        base.update(claims)
        return {name: value for name, value in base.items() if value is not None}

    def mint(
        self,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        with_kid: bool = True,
        key: PrivateKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed token: ``mint(sub="sc://org/proj/conn", aud="other", exp=None)``.

        The key follows ``alg`` (RS*/PS* sign with the RSA key, ES* with the EC key) unless
        ``key`` is given; ``kid`` defaults to that key's kid.
        """
        family = "EC" if alg.startswith("ES") else "RSA"
        signing_kid = kid or self._signing[family]
        signing_key = key if key is not None else self._keys[self._signing[family]]
        header: dict[str, Any] = {"kid": signing_kid} if with_kid else {}
        header.update(headers or {})
        return jwt.encode(self.claims(**claims), signing_key, algorithm=alg, headers=header)

    def _add(self, family: str, key: PrivateKey) -> str:
        # Unique across instances, so two issuers never share a kid by accident.
        kid = f"{family.lower()}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._keys[kid] = key
            self._signing[family] = kid
        return kid

    # -- HTTP --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == JWKS_PATH:
                    with issuer._lock:
                        issuer._jwks_requests += 1
                    if issuer.status != 200:
                        self._send(issuer.status, {"error": "unavailable"})
                    else:
                        self._send(200, issuer.jwks())
                elif self.path == DISCOVERY_PATH:
                    self._send(200, {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url})
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, document: Mapping[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
