"""A fake Azure DevOps OIDC token endpoint on 127.0.0.1 that behaves like the real one.

    with LocalIssuer(audience="api://AzureADTokenExchange") as issuer:
        with ado_oidc(issuer, "job-token", {"6f1c...": "aws-plan"}) as ado:
            env = ado.env()            # SYSTEM_OIDCREQUESTURI, SYSTEM_ACCESSTOKEN, TF_BUILD
            ado.url, ado.requests      # the request URI; how many token requests were served

The request (PROTOCOLS §4): ``POST <uri>?api-version=7.1&serviceConnectionId=<id>`` with
``Authorization: Bearer <job access token>``, ``Content-Type: application/json`` and body
``{}``. Answers: 401 for a missing or wrong bearer token, 400 without ``api-version`` or
``serviceConnectionId``, 404 for an unknown connection, 405 for anything but POST, and
``{"oidcToken": <JWT>}`` signed by ``issuer`` with ``sub=sc://<org>/<project>/<name>``,
``aud=api://AzureADTokenExchange`` and the pipeline claims Azure DevOps adds.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _services.oidc import LocalIssuer

ADO_AUDIENCE = "api://AzureADTokenExchange"
API_VERSIONS = frozenset({"7.1", "7.1-preview.1"})


class AdoOidcEndpoint:
    """The fake's state: what it accepts, what it served."""

    def __init__(
        self,
        issuer: LocalIssuer,
        access_token: str,
        connections: Mapping[str, str],
        *,
        organization: str = "contoso",
        project: str = "infra",
        lifetime: int = 600,
    ) -> None:
        self.issuer = issuer
        self.access_token = access_token
        self.connections = dict(connections)  # id -> name
        self.organization = organization
        self.project = project
        self.lifetime = lifetime  # seconds until minted tokens expire
        self.status: int | None = None  # force an answer (e.g. 403, 503) when set
        self.url = ""
        self._lock = threading.Lock()
        self._requests = 0
        self.tokens: list[str] = []  # every token handed out, for leak checks

    @property
    def requests(self) -> int:
        """Token requests answered 200."""
        with self._lock:
            return self._requests

    def env(self, access_token: str | None = None) -> dict[str, str]:
        """What the agent puts in a step's environment (with System.AccessToken mapped)."""
        return {
            "TF_BUILD": "True",
            "SYSTEM_OIDCREQUESTURI": self.url,
            "SYSTEM_ACCESSTOKEN": self.access_token if access_token is None else access_token,
        }

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, Any]:
        if method != "POST":
            return 405, _error("The requested resource does not support http method.")
        if headers.get("Authorization") != f"Bearer {self.access_token}":
            return 401, _error("TF400813: The user is not authorized to access this resource.")
        if self.status is not None:
            return self.status, _error(f"forced status {self.status}")
        if not headers.get("Content-Type", "").startswith("application/json"):
            return 415, _error("The request content type is not supported.")
        query = parse_qs(urlsplit(path).query)
        version = (query.get("api-version") or [""])[0]
        if version not in API_VERSIONS:
            return 400, _error("No api-version was supplied for the POST request.")
        connection = (query.get("serviceConnectionId") or [""])[0]
        if not connection:
            return 400, _error("Value cannot be null. Parameter name: serviceConnectionId")
        name = self.connections.get(connection)
        if name is None:
            return 404, _error(f"Service connection with id {connection} was not found.")
        token = self.mint(name)
        with self._lock:
            self._requests += 1
            self.tokens.append(token)
        return 200, {"oidcToken": token}

    def mint(self, connection_name: str) -> str:
        now = int(time.time())
        return self.issuer.mint(
            sub=f"sc://{self.organization}/{self.project}/{connection_name}",
            aud=ADO_AUDIENCE,
            iat=now,
            nbf=now,
            exp=now + self.lifetime,
            org_id=str(uuid.uuid5(uuid.NAMESPACE_URL, self.organization)),
            prj_id=str(uuid.uuid5(uuid.NAMESPACE_URL, self.project)),
            def_id="42",
            run_id="1234",
            rpo_ref="refs/heads/main",
            jti=str(uuid.uuid4()),
        )


def _error(message: str) -> dict[str, Any]:
    # The shape of Azure DevOps's error documents.
    return {"$id": "1", "innerException": None, "message": message, "typeKey": "VssException"}


@contextmanager
def ado_oidc(
    issuer: LocalIssuer,
    access_token: str,
    connections: Mapping[str, str],
    **options: Any,
) -> Iterator[AdoOidcEndpoint]:
    """Serve the fake on a free loopback port; ``.url`` is the job's SYSTEM_OIDCREQUESTURI."""
    endpoint = AdoOidcEndpoint(issuer, access_token, connections, **options)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, document = endpoint.answer(self.command, self.path, dict(self.headers))
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    plan, job, project = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    endpoint.url = (
        f"http://{host!s}:{port}/{endpoint.organization}/{project}/_apis/distributedtask/"
        f"hubs/build/plans/{plan}/jobs/{job}/oidctoken"
    )
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
