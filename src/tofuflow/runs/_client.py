"""HTTP client for the control plane's runs, state and audit APIs."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from tofuflow import errors

__all__ = ["ControlPlane"]

# A 429 (the server's rate limit per identity) is retried after its Retry-After.
_RATE_LIMIT_RETRIES = 3
_MAX_RETRY_AFTER = 30.0

_BY_CODE: dict[str, type[errors.RequestError]] = {
    "bad_request_error": errors.BadRequestError,
    "not_found_error": errors.NotFoundError,
    "conflict_error": errors.ConflictError,
    "plan_stale_error": errors.PlanStaleError,
    "locked_error": errors.LockedError,
    "payload_too_large_error": errors.PayloadTooLargeError,
    "rate_limited_error": errors.RateLimitedError,
}
_PAGE = 1000  # the server's largest page (MAX_PAGE in tofuflow.server._paging)

# A connection the network drops never completes: fail in seconds, not after the whole
# request timeout (several TCP SYN retries fit in it).
_CONNECT_TIMEOUT = 15.0


class ControlPlane:
    """One identity's view of a control plane.

    cp = ControlPlane("http://127.0.0.1:8470", token)
    run = cp.create_run("app/dev", digest, context)

    ``refresh`` re-requests an OIDC token from its source: it is called before the current
    token (a JWT) enters the last quarter of its lifetime, and once more after a 401, so
    an apply that outlives its pipeline's tokens can still record its result. Every new
    token is passed to the callbacks in ``on_token`` (register it as a secret there).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 120.0,
        refresh: Callable[[], str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        token = _sendable(token)
        self.token = token
        self.on_token: list[Callable[[str], None]] = []
        self._refresh = refresh
        self._refresh_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT)),
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    @property
    def renewable(self) -> bool:
        """Whether the token comes from a source that can be asked for a fresh one."""
        return self._refresh is not None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.UnreachableError(
                f"cannot reach the control plane at {self.url}: {_why(exc, self._http)}. "
                "Check the URL (tofuflow.toml [server] url or TOFUFLOW_SERVER_URL) and that "
                "it is running"
            ) from exc

    def _renew_token(self, refresh: Callable[[], str], stale: str) -> None:
        with self._refresh_lock:
            if self.token != stale:  # another thread renewed it meanwhile
                return
            token = _sendable(refresh())
            for announce in self.on_token:  # masked before it is ever used
                announce(token)
            self.token = token
            self._http.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state_url(self, workspace: str) -> str:
        return f"{self.url}/v1/state/{workspace}"

    def create_run(
        self, workspace: str, config_digest: str, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"workspace": workspace, "config_digest": config_digest, "context": context}
        return self._json("POST", "/v1/runs", json=body)

    def upload_artifact(self, run_id: str, data: bytes) -> dict[str, Any]:
        return self._json("PUT", f"{_run_path(run_id)}/artifact", content=data)

    def upload_plan(self, run_id: str, document: bytes) -> dict[str, Any]:
        return self._json("PUT", f"{_run_path(run_id)}/plan", content=document)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._json("GET", _run_path(run_id))

    def runs(self, *, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """The newest runs first, up to ``limit`` (None: all), following the server's pages."""
        return self._list("/v1/runs", filters, limit)

    def artifact(self, run_id: str) -> tuple[bytes, str]:
        response = self._send("GET", f"{_run_path(run_id)}/artifact")
        return response.content, response.headers.get("x-sha256", "")

    def approve(self, run_id: str, comment: str = "") -> dict[str, Any]:
        return self._json("POST", f"{_run_path(run_id)}/approve", json={"comment": comment})

    def open_session(self, run_id: str, plan_digest: str, config_digest: str) -> dict[str, Any]:
        """Start applying: ``plan_digest`` is ``Plan.digest`` of the artifact's plan file as
        this runner renders it, ``config_digest`` its checkout's (the server compares both)."""
        body = {"plan_digest": plan_digest, "config_digest": config_digest}
        return self._json("POST", f"{_run_path(run_id)}/apply-session", json=body)

    def finish(self, run_id: str, outcome: str, detail: Mapping[str, Any]) -> dict[str, Any]:
        body = {"outcome": outcome, "detail": dict(detail)}
        return self._json("POST", f"{_run_path(run_id)}/result", json=body)

    def record_credentials(self, run_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"{_run_path(run_id)}/credentials", json=dict(record))

    def cancel(self, run_id: str, reason: str, outcome: str = "cancelled") -> dict[str, Any]:
        """Cancel a run; ``outcome="failed"``: the requester's own plan failed. An admin
        ends an ``applying`` run whose runner is gone (recorded failed)."""
        body = {"reason": reason, "outcome": outcome}
        return self._json("POST", f"{_run_path(run_id)}/cancel", json=body)

    def state(self, workspace: str) -> bytes | None:
        """The workspace's current state document (None when it has none)."""
        response = self._send("GET", f"/v1/state/{workspace}")
        return None if response.status_code == 204 else response.content

    def push_state(
        self, workspace: str, body: bytes, who: str, info: str = "", *, own_lock: bool = False
    ) -> None:
        """Write ``body`` as the workspace's next state version as the binary's http
        backend does: LOCK, POST with the lock's ID and Content-MD5, UNLOCK. A held lock
        refuses it (LockedError naming the holder), unless ``own_lock``: the lock is this
        identity's own (the binary's, left when its unlock failed as well), used and
        released; the control plane still refuses anyone else's."""
        path = f"/v1/state/{workspace}"
        lock: dict[str, Any] = {
            "ID": str(uuid.uuid4()), "Operation": "OperationTypeApply",
            "Info": info or "tofuflow state push", "Who": who,
            "Version": "", "Created": _now(), "Path": "",
        }  # fmt: skip
        locked = self._request("LOCK", f"{path}/lock", json=lock)
        if locked.status_code in (409, 423):
            try:
                held = locked.json()
            except ValueError:
                held = None
            if not own_lock or not isinstance(held, dict) or not isinstance(held.get("ID"), str):
                holder = held.get("Who") if isinstance(held, dict) else None
                raise errors.LockedError(
                    f"{workspace} is locked by {holder or 'another run'}: wait for it to "
                    f"finish, or release a lock whose holder is gone (`tofuflow unlock "
                    f"{workspace}`), then push again"
                )
            lock = held
        elif not locked.is_success:
            raise _error(locked, self.url)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 (protocol)
        headers = {"Content-Type": "application/json", "Content-MD5": md5}
        self._send("POST", path, params={"ID": lock["ID"]}, content=body, headers=headers)
        self._send("UNLOCK", f"{path}/lock", json=lock)

    def renew_session(self, run_id: str) -> dict[str, Any]:
        """Renew the apply session's lease (the runner is alive)."""
        return self._json("POST", f"{_run_path(run_id)}/apply-session/renew")

    def append_log(self, run_id: str, text: str) -> dict[str, Any]:
        """Send a chunk of the applying binary's (scrubbed) output."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        return self._json(
            "POST", f"{_run_path(run_id)}/log", content=text.encode(), headers=headers
        )

    def plan_text(self, run_id: str, fmt: str = "text") -> str:
        """The run's whole plan, every resource, sensitive values masked."""
        return self._send("GET", f"{_run_path(run_id)}/plan", params={"format": fmt}).text

    def force_unlock(self, workspace: str) -> None:
        """Release the state lock whoever holds it (admin; audited as a force-unlock)."""
        self._send("UNLOCK", f"/v1/state/{workspace}/lock")

    def workspaces(self) -> list[dict[str, Any]]:
        """Workspaces the caller may read: name, serial, version, locked."""
        return self._list("/v1/workspaces", {}, None)

    def versions(self, workspace: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/workspaces/{workspace}/versions", {}, None)

    def audit(self, *, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Events the caller may read, oldest first, up to ``limit`` (None: all)."""
        return self._list("/v1/audit", filters, limit)

    def audit_verify(self) -> dict[str, Any]:
        return self._json("GET", "/v1/audit/verify")

    def audit_checkpoint(self) -> dict[str, Any]:
        """Have the server check the chain and sign its head (409 if the chain was altered)."""
        return self._json("POST", "/v1/audit/checkpoints")

    def audit_latest_checkpoint(self) -> dict[str, Any]:
        return self._json("GET", "/v1/audit/checkpoints/latest")

    # -- environments (tofuflow.envs) ---------------------------------------------------

    def create_environment(
        self, name: str, *, source_workspace: str, ttl_seconds: int, owner: str,
        snapshot: bytes, context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        body = {
            "name": name, "source_workspace": source_workspace, "ttl_seconds": ttl_seconds,
            "owner": owner, "context": dict(context or {}),
            "snapshot": base64.b64encode(snapshot).decode(),
        }  # fmt: skip
        return self._json("POST", "/v1/environments", json=body)

    def environment(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/environments/{name}")

    def environments(
        self, *, due: bool = False, include_destroyed: bool = False
    ) -> list[dict[str, Any]]:
        params = {"due": str(due).lower(), "include_destroyed": str(include_destroyed).lower()}
        return self._list("/v1/environments", params, None)

    def extend_environment(self, name: str, ttl_seconds: int) -> dict[str, Any]:
        body = {"ttl_seconds": ttl_seconds}
        return self._json("POST", f"/v1/environments/{name}/extend", json=body)

    def environment_snapshot(self, name: str) -> bytes:
        return self._send("GET", f"/v1/environments/{name}/snapshot").content

    def claim_environment(
        self, name: str, holder: str, *, lease_seconds: int = 60, force: bool = False
    ) -> dict[str, Any]:
        body = {"holder": holder, "lease_seconds": lease_seconds, "force": force}
        return self._json("POST", f"/v1/environments/{name}/claim", json=body)

    def environment_run(self, name: str, holder: str, run_id: str) -> dict[str, Any]:
        body = {"holder": holder, "run_id": run_id}
        return self._json("POST", f"/v1/environments/{name}/run", json=body)

    def environment_destroyed(self, name: str, holder: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/environments/{name}/destroyed", json={"holder": holder})

    def environment_failed(self, name: str, holder: str, error: str) -> dict[str, Any]:
        body = {"holder": holder, "error": error[:20000]}
        return self._json("POST", f"/v1/environments/{name}/failed", json=body)

    # -- drift ----------------------------------------------------------------------------

    def record_drift(
        self, workspace: str, status: str, report: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"status": status, "report": dict(report)}
        return self._json("POST", f"/v1/workspaces/{workspace}/drift", json=body)

    def drift(self, workspace: str | None = None) -> list[dict[str, Any]]:
        return self._list("/v1/drift", {"workspace": workspace}, None)

    def _list(self, path: str, filters: Mapping[str, Any], limit: int | None) -> list[Any]:
        """Every item of a list endpoint (up to ``limit``), following its Link rel="next"."""
        first = {k: v for k, v in filters.items() if v is not None}
        params: dict[str, Any] | None = {**first, "limit": min(limit or _PAGE, _PAGE)}
        items: list[Any] = []
        url: str | None = path
        while url is not None and (limit is None or len(items) < limit):
            response = self._send("GET", url, params=params)
            items += response.json()
            # The next link carries the filters and the cursor: params would replace them.
            url, params = response.links.get("next", {}).get("url"), None
        return items if limit is None else items[:limit]

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self._send(method, path, **kwargs).json())

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._refresh is not None and _expiring(self.token):
            self._renew_token(self._refresh, self.token)
        for attempt in range(_RATE_LIMIT_RETRIES + 1):
            response = self._request(method, path, **kwargs)
            if response.status_code == 401 and self._refresh is not None:
                # Revoked or expired early (clock skew): one fresh token, one retry.
                self._renew_token(self._refresh, self.token)
                response = self._request(method, path, **kwargs)
            if response.status_code != 429 or attempt == _RATE_LIMIT_RETRIES:
                break
            # Rate limited: wait as long as the server asks (within reason), then retry.
            time.sleep(min(_retry_after(response), _MAX_RETRY_AFTER))
        if response.is_success:
            return response
        raise _error(response, self.url)


_RUN_ID = re.compile(r"[0-9a-f]{16}")  # as the server makes them (uuid4's hex, 16 of it)


def _run_path(run_id: str) -> str:
    """``/v1/runs/<id>`` for a run id as `tofuflow plan` printed it (surrounding white
    space from a copy dropped); anything else is refused here, not sent as a path."""
    given = run_id.strip()
    if not _RUN_ID.fullmatch(given):
        shown = given if len(given) <= 40 else given[:40] + "…"
        raise errors.NotFoundError(
            f"{shown!r} is not a run id: a run id is 16 hexadecimal characters, as "
            "`tofuflow plan` prints it (run <id>: …); `tofuflow runs list` shows them"
        )
    return f"/v1/runs/{given}"


def _sendable(token: str) -> str:
    """``token`` as it goes into the Authorization header. A secret store's file or a copy
    from a terminal often brings a line break or spaces around it: dropped. One inside it
    cannot be guessed away; httpx would refuse the header and print it, token and all, as
    if the server were unreachable: say what is wrong without showing the token."""
    cleaned = token.strip()
    if any(not " " < character < "\x7f" for character in cleaned):
        raise errors.ConfigError(
            "the control-plane token contains a line break, a space or another character no "
            "token has (tofuflow's tfw_… tokens and OIDC tokens are printable ASCII): copy it "
            "again, the token alone"
        )
    return cleaned


def _why(exc: httpx.HTTPError, http: httpx.Client) -> str:
    """The transport error as a person reads it (httpx says only "timed out")."""
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"no answer to the connection within {http.timeout.connect:g} s (a firewall "
            "dropping it, a host that is down, or a wrong address)"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"connected, but no answer within {http.timeout.read:g} s"
    return str(exc)


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(float(response.headers.get("retry-after", "1")), 0.0)
    except ValueError:
        return 1.0


def _error(response: httpx.Response, url: str) -> errors.TofuflowError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or response.text[:300] or response.reason_phrase)
    if not body and ("html" in response.headers.get("content-type", "") or not response.text):
        # Every refusal of the control plane is a JSON body: an HTML page or an empty body
        # comes from another web server at that address, or a proxy in front of it.
        message = (
            f"{url} answered {response.request.method} {response.request.url.path} with "
            f"{response.status_code} {response.reason_phrase}, not as a tofuflow control "
            "plane does. Check the URL (tofuflow.toml [server] url or TOFUFLOW_SERVER_URL: "
            "the control plane's address, also its path prefix behind a proxy) and that "
            "the control plane behind it is running"
        )
        if response.status_code >= 500:
            return errors.ServerError(message)
    if response.status_code == 401:
        return errors.AuthError(message)
    if response.status_code == 403:
        return errors.ForbiddenError(message)
    cls = _BY_CODE.get(str(body.get("code", "")))
    if cls is not None:
        return cls(message)
    if 400 <= response.status_code < 500:
        return errors.RequestError(message)
    return errors.ServerError(
        f"the control plane failed ({response.status_code}: {message}); retry, and if it "
        "persists its operator finds the cause in the server log"
    )


def _expiring(token: str) -> bool:
    """Whether a JWT is in the last quarter of its lifetime (at least 10 s before ``exp``);
    False for anything that is not a JWT with ``exp`` (API tokens do not expire mid-run)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = float(claims["exp"])
        lifetime = exp - float(claims.get("iat") or claims.get("nbf") or exp - 600)
    except (ValueError, KeyError, TypeError):
        return False
    return time.time() >= exp - max(10.0, lifetime / 4)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
