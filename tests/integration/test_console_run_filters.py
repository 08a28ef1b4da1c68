"""The console's runs list filtered by pipeline and pipeline run (an Azure DevOps build,
an Airflow DAG run), read as a person reads it: the page's rows and its "Older runs"
link, signed in with `tofuflow ui`'s one-time link."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server

DAG_RUN = "manual__2026-12-05T01:00:00+00:00"  # ':' and '+' survive the next-page link
AIRFLOW = {"ci_system": "airflow", "pipeline_id": "deploy", "pipeline_name": "deploy"}
AZURE = {"ci_system": "azure-devops", "pipeline_id": "12", "pipeline_name": "infra-ci",
         "run_id": "4711", "run_number": "20261205.3"}  # fmt: skip


@pytest.fixture
def plane(server_config: Any, database_url: str) -> Iterator[RunningServer]:
    """On SQLite and on PostgreSQL: the filter reads the run context's JSON."""
    with threaded_server(replace(server_config, database_url=database_url)) as running:
        yield running


@pytest.fixture
def browser_session(plane: RunningServer) -> Iterator[httpx.Client]:
    from tofuflow.server.console import issue_sign_in_link

    with httpx.Client(base_url=plane.url) as client:
        signed_in = client.get(issue_sign_in_link(plane.app), follow_redirects=True)
        assert signed_in.status_code == 200 and "Signed in as" in signed_in.text
        yield client


def _start(server: RunningServer, token: str, context: dict[str, Any]) -> str:
    created = httpx.post(f"{server.url}/v1/runs", headers={"Authorization": f"Bearer {token}"},
                         json={"workspace": "app/prod", "config_digest": "0" * 64,
                               "context": context})  # fmt: skip
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def _listed(client: httpx.Client, path: str, **params: str) -> list[str]:
    """Every run id the list shows, following "Older runs" to the end."""
    shown: list[str] = []
    answer = client.get(path, params=params)
    while True:
        assert answer.status_code == 200, answer.text
        shown += re.findall(r'<td><a href="/console/runs/([0-9a-f]+)">', answer.text)
        older = re.search(r'<a rel="next" href="([^"]+)"', answer.text)
        if older is None:
            return shown
        answer = client.get(html.unescape(older.group(1)))


def test_the_runs_list_filters_by_dag_run_and_pages_through_every_match_once(
    plane: RunningServer, browser_session: httpx.Client
) -> None:
    planner = make_token(plane, "planner")
    wanted, others = [], []
    for i in range(55):  # more than a page (50), interleaved with runs of other pipelines
        wanted.append(_start(plane, planner, {**AIRFLOW, "run_id": DAG_RUN}))
        if i % 5 == 0:
            others.append(_start(plane, planner, {**AIRFLOW, "run_id": "scheduled__1"}))
            others.append(_start(plane, planner, AZURE))

    first = browser_session.get("/console/runs", params={"pipeline": "deploy",
                                                         "pipeline_run": DAG_RUN})  # fmt: skip
    assert f'value="{DAG_RUN}"' in first.text  # the filter stays filled in
    shown = _listed(browser_session, "/console/runs", pipeline="deploy", pipeline_run=DAG_RUN)
    assert shown == wanted[::-1]  # newest first, each once, no other pipeline's

    # A DAG run id alone; an Azure DevOps build by its id, by its number, by its pipeline.
    assert _listed(browser_session, "/console/runs", pipeline_run=DAG_RUN) == wanted[::-1]
    azure = others[1::2][::-1]
    assert _listed(browser_session, "/console/runs", pipeline_run="4711") == azure
    assert _listed(browser_session, "/console/runs", pipeline_run="20261205.3") == azure
    assert _listed(browser_session, "/console/runs", pipeline="infra-ci") == azure
    assert _listed(browser_session, "/console/runs", pipeline="12", status="planning") == azure
    nothing = browser_session.get("/console/runs", params={"pipeline": "deploy",
                                                           "pipeline_run": "4711"})  # fmt: skip
    assert "No runs you may read match these filters." in nothing.text


def test_a_runs_page_links_its_commit_branch_and_dag_run_and_its_sibling_runs(
    plane: RunningServer, browser_session: httpx.Client
) -> None:
    task_url = ("https://airflow.example.com/dags/deploy/runs/manual__2026-12-05T01%3A00%3A00"
                "%2B00%3A00/tasks/apply?try_number=1")  # fmt: skip
    sha = "9fceb02d0ae598e95dc970b74767f19372d61af8"
    context = {**AIRFLOW, "run_id": DAG_RUN, "run_url": task_url, "commit_sha": sha,
               "branch": "main", "repository": "https://github.com/acme/dags"}  # fmt: skip
    run_id = _start(plane, make_token(plane, "planner"), context)
    sibling = _start(plane, make_token(plane, "planner"), context)
    page = browser_session.get(f"/console/runs/{run_id}")
    assert page.status_code == 200, page.text
    links = dict(re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', page.text))
    assert links[f"https://github.com/acme/dags/commit/{sha}"] == sha
    assert links["https://github.com/acme/dags/tree/main"] == "main"
    dag_run = html.unescape(task_url.split("/tasks/")[0])
    assert html.unescape(links[dag_run.replace("&", "&amp;")]) == f"deploy / {DAG_RUN}"
    runs_here = next(html.unescape(url) for url, text in links.items()
                     if text == "every run of this pipeline run")  # fmt: skip
    assert _listed(browser_session, runs_here) == [sibling, run_id]
