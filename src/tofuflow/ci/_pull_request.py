"""The plan on an Azure DevOps pull request: one thread per workspace that later plans
update instead of duplicating, and a PR status (PROTOCOLS §7, REST api-version 7.1).

    pr = PullRequest.from_env(os.environ)      # None unless Build.Reason is PullRequest
    problem = pr.post_plan("app/dev", markdown, run, link)   # None, or why it failed

Authenticated with the job's ``System.AccessToken`` (mapped into the step's environment
as ``SYSTEM_ACCESSTOKEN``); the build service needs "Contribute to pull requests" on the
repository. A refusal or an outage never fails the plan: ``post_plan`` returns what went
wrong, without the token, for the caller to report as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tofuflow.errors import AuthError, TofuflowError, UnreachableError

__all__ = ["API_VERSION", "PullRequest", "console_link", "plan_status"]

API_VERSION = "7.1"
_MAX_CONTENT = 150_000  # a PR comment's limit, with room for the marker and link
_REQUIRED = {
    "SYSTEM_COLLECTIONURI": "System.CollectionUri",
    "SYSTEM_TEAMPROJECTID": "System.TeamProjectId",
    "BUILD_REPOSITORY_ID": "Build.Repository.ID",
    "SYSTEM_PULLREQUEST_PULLREQUESTID": "System.PullRequest.PullRequestId",
}


def console_link(base: str, *, run_id: str | None = None, workspace: str | None = None) -> str:
    """The console page of a run (``/console/runs/<id>``) or a workspace
    (``/console/workspaces/<name>``) of the control plane at ``base``: the one place that
    knows the console's paths (the CLI and the server's notifications use it too)."""
    root = base.rstrip("/") + "/console"
    if run_id:
        return f"{root}/runs/{run_id}"
    if workspace:
        return f"{root}/workspaces/{workspace}"
    return root + "/runs"


def plan_status(run: Mapping[str, Any]) -> tuple[str, str]:
    """(PR status state, description) for a run after its plan."""
    status = str(run.get("status", ""))
    if status == "denied":
        return "failed", "denied by policy"
    if status == "needs_approval":
        return "pending", "pending approval"
    if status in {"approved", "no_changes"}:
        return "succeeded", "no changes" if status == "no_changes" else "plan approved"
    return "error", f"plan {status or 'failed'}"


@dataclass(frozen=True)
class PullRequest:
    base: str  # …/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}
    pull_request_id: str
    token: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PullRequest | str | None:
        """The PR this build is for; None when it is not a PR build; a str saying what is
        missing when it is one but cannot be reached."""
        if env.get("BUILD_REASON") != "PullRequest":
            return None
        missing = [f"{name} ({variable})" for name, variable in _REQUIRED.items()
                   if not env.get(name)]  # fmt: skip
        if missing:
            return f"the pipeline does not set {', '.join(missing)}"
        token = env.get("SYSTEM_ACCESSTOKEN", "")
        if not token:
            return (
                "SYSTEM_ACCESSTOKEN is not in the step's environment: map it with "
                "`env: { SYSTEM_ACCESSTOKEN: $(System.AccessToken) }`"
            )
        collection = env["SYSTEM_COLLECTIONURI"].rstrip("/")
        parts = [quote(env[name], safe="") for name in
                 ("SYSTEM_TEAMPROJECTID", "BUILD_REPOSITORY_ID",
                  "SYSTEM_PULLREQUEST_PULLREQUESTID")]  # fmt: skip
        base = f"{collection}/{parts[0]}/_apis/git/repositories/{parts[1]}/pullRequests/{parts[2]}"
        return cls(base, env["SYSTEM_PULLREQUEST_PULLREQUESTID"], token)

    def post_plan(
        self,
        workspace: str,
        markdown: str,
        run: Mapping[str, Any],
        link: str | None,
        client: httpx.Client | None = None,
    ) -> str | None:
        """Create or update this workspace's thread, then set the status; None when both
        worked, else what failed (safe to print: never the token)."""
        marker = f"<!-- tofuflow:plan:{workspace} -->"
        content = markdown[:_MAX_CONTENT]
        if link:
            content += f"\n[Open run {run.get('id')} in tofuflow]({link})\n"
        content += f"\n{marker}\n"
        state, description = plan_status(run)
        status = {"state": state, "description": f"{workspace}: {description}",
                  "context": {"name": "plan", "genre": "tofuflow"}}  # fmt: skip
        if link:
            status["targetUrl"] = link
        own = client is None
        http = client or httpx.Client(timeout=30)
        try:
            self._thread(http, marker, content)
            self._send(http, "POST", "/statuses", json=status)
        except TofuflowError as refused:
            return f"pull request {self.pull_request_id}: {refused}"
        finally:
            if own:
                http.close()
        return None

    def _thread(self, http: httpx.Client, marker: str, content: str) -> None:
        threads = self._send(http, "GET", "/threads").get("value") or []
        for thread in threads:
            comments = thread.get("comments") or []
            if comments and marker in str(comments[0].get("content") or ""):
                path = f"/threads/{thread['id']}/comments/{comments[0]['id']}"
                self._send(http, "PATCH", path, json={"content": content})
                return
        body = {"comments": [{"parentCommentId": 0, "content": content, "commentType": 1}],
                "status": 1}  # fmt: skip
        self._send(http, "POST", "/threads", json=body)

    def _send(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        try:
            url, params = f"{self.base}{path}", {"api-version": API_VERSION}
            answer = http.request(method, url, params=params, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"Azure DevOps could not be reached ({type(exc).__name__})"
            ) from None
        if answer.status_code in {401, 403}:
            raise AuthError(
                f"Azure DevOps refused the job's access token (HTTP {answer.status_code}): it "
                "is expired or not this build's, or the build service lacks \"Contribute to "
                'pull requests" on the repository'
            )
        if answer.status_code >= 300:
            raise TofuflowError(
                f"Azure DevOps answered HTTP {answer.status_code} to {method} {path}"
            )
        return answer.json() if answer.content else {}
