"""A local server for the Azure DevOps pull-request REST endpoints tofuflow uses
(PROTOCOLS §7, api-version 7.1), with their paths, bodies and status codes:

    GET   {collection}{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads
    POST  …/threads                               {"comments": [...], "status": 1}
    PATCH …/threads/{thread}/comments/{comment}   {"content": "..."}
    POST  …/statuses                              {"state", "description", "context", ...}

401 without the job's bearer token, 400 without ``api-version``, 404 for another
project, repository or pull request. Azure DevOps cannot run here: this is the one fake.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["AdoPullRequests", "ado_pull_requests"]

_PATH = re.compile(
    r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/git/repositories/(?P<repo>[^/]+)"
    r"/pullRequests/(?P<pr>\d+)/(?P<rest>threads(?:/\d+/comments/\d+)?|statuses)$"
)


class AdoPullRequests:
    def __init__(self, token: str, project: str, repository: str, pull_request: int) -> None:
        self.token, self.project, self.repository = token, project, repository
        self.pull_request = pull_request
        self.threads: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self._lock = threading.Lock()

    def env(self, token: str | None = None) -> dict[str, str]:
        """The predefined variables of a PR build (the token mapped with ``env:``)."""
        return {
            "BUILD_REASON": "PullRequest", "SYSTEM_COLLECTIONURI": f"{self.url}/contoso/",
            "SYSTEM_TEAMPROJECTID": self.project, "BUILD_REPOSITORY_ID": self.repository,
            "SYSTEM_PULLREQUEST_PULLREQUESTID": str(self.pull_request),
            "SYSTEM_ACCESSTOKEN": self.token if token is None else token,
        }  # fmt: skip

    def handle(self, method: str, path: str, query: str, auth: str, body: bytes) -> Any:
        with self._lock:
            self.requests.append((method, path))
            if auth != f"Bearer {self.token}":
                return 401, {"message": "TF400813: The user is not authorized"}
            if parse_qs(query).get("api-version") != ["7.1"]:
                return 400, {"message": "api-version is required"}
            match = _PATH.match(path)
            if match is None or (match["project"], match["repo"], match["pr"]) != (
                self.project, self.repository, str(self.pull_request),
            ):  # fmt: skip
                return 404, {"message": "not found"}
            rest = match["rest"]
            data = json.loads(body) if body else {}
            if rest == "threads" and method == "GET":
                return 200, {"value": self.threads, "count": len(self.threads)}
            if rest == "threads" and method == "POST":
                comments = [{**c, "id": i + 1} for i, c in enumerate(data["comments"])]
                thread = {"id": len(self.threads) + 100, "comments": comments,
                          "status": data.get("status")}  # fmt: skip
                self.threads.append(thread)
                return 200, thread
            if rest.startswith("threads/") and method == "PATCH":
                _, thread_id, _, comment_id = rest.split("/")
                for thread in self.threads:
                    for comment in thread["comments"]:
                        if thread["id"] == int(thread_id) and comment["id"] == int(comment_id):
                            comment["content"] = data["content"]
                            return 200, comment
                return 404, {"message": "no such comment"}
            if rest == "statuses" and method == "POST":
                status = {**data, "id": len(self.statuses) + 1}
                self.statuses.append(status)
                return 200, status
            return 405, {"message": "method not allowed"}


@contextmanager
def ado_pull_requests(
    token: str, project: str = "p-0001", repository: str = "r-0001", pull_request: int = 7
) -> Iterator[AdoPullRequests]:
    fake = AdoPullRequests(token, project, repository, pull_request)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, answer = fake.handle(self.command, split.path, split.query,
                                         self.headers.get("authorization", ""), body)  # fmt: skip
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
