"""Where a stage's OIDC ID token comes from.

    source = token_source_from_config({"source": "azure-devops",
                                       "service_connection_id": "6f1c..."})
    token = source.token(None)        # a fresh JWT on every call
    source.kind                       # "azure-devops" (goes into the audit record)

Every source fetches (or re-reads) on each call: pipeline tokens live minutes, so the
caller asks again when it needs a fresh one instead of keeping one around.
Error messages never include a token or the job's access token.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from tofuflow.errors import AuthError, ConfigError
from tofuflow.identity._config import Table

__all__ = [
    "ADO_AUDIENCE",
    "SOURCE_KEYS",
    "AzureDevOpsTokenSource",
    "FileTokenSource",
    "GitHubActionsTokenSource",
    "StaticTokenSource",
    "TokenSource",
    "token_source_from_config",
]

# Azure DevOps mints every pipeline token for this audience; the request cannot change it.
ADO_AUDIENCE = "api://AzureADTokenExchange"
ADO_API_VERSION = "7.1"
_MAPPING_HINT = "env:\n  SYSTEM_ACCESSTOKEN: $(System.AccessToken)"
_TIMEOUT = 30.0
_ATTEMPTS = 3  # transient failures (connection, 5xx, 429) are retried; refusals are not


class TokenSource(Protocol):
    """Anything that hands out OIDC ID tokens: ``source.token("sts.amazonaws.com")``."""

    @property
    def kind(self) -> str:
        """Recorded in the audit log: azure-devops, github-actions, file or static-dev."""
        ...

    @property
    def refreshable(self) -> bool:
        """Whether a later call can return a newer token than an earlier one."""
        ...

    def token(self, audience: str | None = None) -> str: ...


class AzureDevOpsTokenSource:
    """An Azure DevOps job's OIDC token for a service connection (workload identity).

        AzureDevOpsTokenSource("6f1c...").token()    # inside a pipeline step

    Needs ``SYSTEM_OIDCREQUESTURI`` (set by the agent) and ``SYSTEM_ACCESSTOKEN`` (only
    present when the step maps it: ``env: SYSTEM_ACCESSTOKEN: $(System.AccessToken)``).
    The token's audience is always ``api://AzureADTokenExchange``.
    """

    kind = "azure-devops"
    refreshable = True

    def __init__(
        self,
        service_connection_id: str,
        *,
        env: Mapping[str, str] = os.environ,
        http: httpx.Client | None = None,
    ) -> None:
        self.service_connection_id = service_connection_id
        self._env = env
        self._http = http

    def __repr__(self) -> str:
        return f"AzureDevOpsTokenSource({self.service_connection_id!r})"

    def request_details(self) -> tuple[str, str]:
        """``(request URL, job access token)``: what azurerm's refresh mode needs."""
        url = self._env.get("SYSTEM_OIDCREQUESTURI", "")
        if not url:
            raise AuthError(
                "SYSTEM_OIDCREQUESTURI is not set: this is not running in an Azure DevOps "
                "pipeline job (the agent sets it); outside a pipeline use another token "
                'source, e.g. source = "static" with token_env for local development'
            )
        access_token = self._env.get("SYSTEM_ACCESSTOKEN", "")
        if not access_token:
            raise AuthError(
                "SYSTEM_ACCESSTOKEN is not set: Azure DevOps only gives it to steps that map "
                f"it; add to the step that runs tofuflow:\n{_MAPPING_HINT}"
            )
        return url, access_token

    def token(self, audience: str | None = None) -> str:
        """A fresh token; ``audience`` is ignored (Azure DevOps fixes it)."""
        url, access_token = self.request_details()
        connection = f"service connection {self.service_connection_id}"
        response = _request(
            self._http,
            "POST",
            url,
            params={
                "api-version": ADO_API_VERSION,
                "serviceConnectionId": self.service_connection_id,
            },
            headers={"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"},
            content=b"{}",
            what=f"the Azure DevOps OIDC endpoint ({_host(url)}) for {connection}",
        )
        if response.status_code != 200:
            raise AuthError(self._refusal(response, access_token))
        return _token_field(response, "oidcToken", f"Azure DevOps ({connection})")

    def _refusal(self, response: httpx.Response, access_token: str) -> str:
        status, connection = response.status_code, self.service_connection_id
        if status == 401:
            return (
                f"Azure DevOps refused the job access token (HTTP 401) while requesting an "
                f"OIDC token for service connection {connection}: map this job's own token "
                f"into the step (not a PAT, not one from another job):\n{_MAPPING_HINT}"
            )
        if status == 403:
            return (
                f"this pipeline may not use service connection {connection} (HTTP 403): "
                "grant it in Project settings > Service connections > the connection > "
                "Security > Pipeline permissions, or approve the connection's pending check"
            )
        if status == 404:
            return (
                f"service connection {connection} was not found (HTTP 404): set "
                "service_connection_id to the id (a GUID) shown in Project settings > "
                "Service connections, of a connection in this project that uses workload "
                "identity federation"
            )
        detail = _server_message(response, secret=access_token)
        return (
            f"Azure DevOps refused the OIDC token request for service connection "
            f"{connection} (HTTP {status}{detail}); check service_connection_id and that "
            f"the agent is recent enough for api-version {ADO_API_VERSION}"
        )


class GitHubActionsTokenSource:
    """A GitHub Actions job's OIDC token: ``GitHubActionsTokenSource("sts.amazonaws.com")``.

    Needs ``permissions: id-token: write`` on the workflow or job, which makes the runner
    set ``ACTIONS_ID_TOKEN_REQUEST_URL`` and ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``.
    """

    kind = "github-actions"
    refreshable = True

    def __init__(
        self,
        audience: str | None = None,
        *,
        env: Mapping[str, str] = os.environ,
        http: httpx.Client | None = None,
    ) -> None:
        self.audience = audience
        self._env = env
        self._http = http

    def __repr__(self) -> str:
        return f"GitHubActionsTokenSource({self.audience!r})"

    def token(self, audience: str | None = None) -> str:
        url = self._env.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
        request_token = self._env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
        if not url or not request_token:
            raise AuthError(
                "ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: "
                "add `permissions: id-token: write` to the workflow or the job (pull "
                "requests from forks never get one)"
            )
        wanted = audience or self.audience
        response = _request(
            self._http,
            "GET",
            url,
            params={"audience": wanted} if wanted else {},
            headers={"Authorization": f"Bearer {request_token}", "Accept": "application/json"},
            what=f"the GitHub Actions OIDC endpoint ({_host(url)})",
        )
        if response.status_code != 200:
            detail = _server_message(response, secret=request_token)
            raise AuthError(
                f"GitHub Actions refused the OIDC token request (HTTP "
                f"{response.status_code}{detail}); check `permissions: id-token: write` and "
                "that the request token belongs to this job"
            )
        return _token_field(response, "value", "GitHub Actions")


class FileTokenSource:
    """A token in a file, re-read on every call: Kubernetes projected service-account
    tokens, ``AZURE_FEDERATED_TOKEN_FILE``. ``FileTokenSource("/var/run/secrets/token")``"""

    kind = "file"
    refreshable = True  # the kubelet (or whoever owns the file) rotates it

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTokenSource({str(self.path)!r})"

    def token(self, audience: str | None = None) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError as exc:
            raise AuthError(
                f"the token file {self.path} does not exist: mount the projected "
                "service-account token there (or fix path / path_env)"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"the token file {self.path} cannot be read: {exc}") from exc
        if not token:
            raise AuthError(
                f"the token file {self.path} is empty: the token has not been written yet; "
                "check the volume projection (serviceAccountToken) or the workload identity "
                "webhook"
            )
        return token


class StaticTokenSource:
    """One fixed token, for local development only; audited as ``static-dev``.

    StaticTokenSource(os.environ["DEV_OIDC_TOKEN"])
    """

    kind = "static-dev"
    refreshable = False

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ConfigError("the static development token is empty; set it to a JWT")
        self._token = token.strip()

    def __repr__(self) -> str:
        return "StaticTokenSource(<hidden>)"

    def token(self, audience: str | None = None) -> str:
        return self._token


# Keys each source reads from a stage table (StageIdentity refuses any other key).
SOURCE_KEYS: Mapping[str, frozenset[str]] = {
    "azure-devops": frozenset({"service_connection_id"}),
    "github-actions": frozenset(),
    "file": frozenset({"path", "path_env"}),
    "static": frozenset({"token_env"}),
}


def token_source_from_config(
    cfg: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
    *,
    where: str = "identity",
    http: httpx.Client | None = None,
) -> TokenSource:
    """Build the source a stage table names.

        token_source_from_config({"source": "file", "path": "/var/run/secrets/token"})
        token_source_from_config({"source": "static", "token_env": "DEV_OIDC_TOKEN"})

    The token itself is never in the file: ``static`` names an environment variable.
    """
    table = Table(cfg, where)
    kind = table.choice("source", SOURCE_KEYS)
    builders: dict[str, Callable[[Table, Mapping[str, str], httpx.Client | None], TokenSource]]
    builders = {
        "azure-devops": _azure_devops,
        "github-actions": _github_actions,
        "file": _file,
        "static": _static,
    }
    return builders[kind](table, env, http)


def _azure_devops(table: Table, env: Mapping[str, str], http: httpx.Client | None) -> TokenSource:
    connection = table.string(
        "service_connection_id", example='"<the service connection id, a GUID>"'
    )
    return AzureDevOpsTokenSource(connection, env=env, http=http)


def _github_actions(table: Table, env: Mapping[str, str], http: httpx.Client | None) -> TokenSource:
    audience = table.optional_string("audience", example='"sts.amazonaws.com"')
    return GitHubActionsTokenSource(audience, env=env, http=http)


def _file(table: Table, env: Mapping[str, str], http: httpx.Client | None) -> TokenSource:
    path = table.optional_string("path", example='"/var/run/secrets/tokens/oidc"')
    path_env = table.optional_string("path_env", example='"AZURE_FEDERATED_TOKEN_FILE"')
    if (path is None) == (path_env is None):
        raise table.error(
            "path",
            'set exactly one of path = "/var/run/secrets/tokens/oidc" or '
            'path_env = "AZURE_FEDERATED_TOKEN_FILE"',
        )
    if path is not None:
        return FileTokenSource(path)
    found = env.get(str(path_env))
    if not found:
        raise table.error(
            "path_env",
            f"the environment variable {path_env} is not set; it must hold the token file's "
            "path (the workload identity webhook sets AZURE_FEDERATED_TOKEN_FILE)",
        )
    return FileTokenSource(found)


def _static(table: Table, env: Mapping[str, str], http: httpx.Client | None) -> TokenSource:
    name = table.string("token_env", example='"DEV_OIDC_TOKEN"')
    token = env.get(name, "")
    if not token.strip():
        state = "is empty" if name in env else "is not set"
        raise table.error(
            "token_env",
            f"the environment variable {name} {state}; export {name}=<a development "
            "JWT> (the token itself never goes into tofuflow.toml)",
        )
    return StaticTokenSource(token)


# -- HTTP ---------------------------------------------------------------------------------


def _request(
    http: httpx.Client | None,
    method: str,
    url: str,
    *,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    what: str,
    content: bytes | None = None,
) -> httpx.Response:
    """Send, retrying transient failures (connection, 5xx, 429); AuthError when unreachable."""
    client = http or httpx.Client(timeout=_TIMEOUT)

    # Merged, not passed as params=: httpx would replace the URL's own query, and
    # GitHub's request URL already carries one (?api-version=...).
    target = httpx.URL(url).copy_merge_params(dict(params))

    def send() -> httpx.Response:
        return client.request(method, target, headers=headers, content=content)

    try:
        for attempt in range(1, _ATTEMPTS):
            try:
                response = send()
            except httpx.HTTPError:
                pass
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
            time.sleep(0.5 * attempt)
        try:
            return send()
        except httpx.HTTPError as exc:
            raise AuthError(
                f"cannot reach {what}: {type(exc).__name__}: {exc}; check the agent's network "
                "and proxy settings, then retry the job"
            ) from exc
    finally:
        if http is None:
            client.close()


def _token_field(response: httpx.Response, field: str, who: str) -> str:
    try:
        document = response.json()
    except ValueError:
        document = None
    token = document.get(field) if isinstance(document, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise AuthError(
            f"{who} answered without a token (no {field!r} in the response); check the "
            "request URL points at the job's OIDC endpoint and no proxy rewrote the answer"
        )
    return token.strip()


def _server_message(response: httpx.Response, *, secret: str) -> str:
    """A short excerpt of the server's error message, with the bearer token masked."""
    try:
        document = response.json()
        message = document.get("message") if isinstance(document, dict) else None
    except ValueError:
        message = None
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + message.replace(secret, "***").strip()[:300]


def _host(url: str) -> str:
    # Only the host: the path holds plan and job ids nobody needs in an error.
    return urlsplit(url).netloc or url[:40]
