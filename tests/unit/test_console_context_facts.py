"""A run's context on its console page: commit, branch, Azure DevOps build, Airflow DAG
run, each a link when its URL is known, and never a link that is not http(s)."""

from __future__ import annotations

from tofuflow.server.console._views import ContextFact, context_facts

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def _facts(context: dict[str, object], commit: str | None = SHA) -> dict[str, ContextFact]:
    return {fact.label: fact for fact in context_facts(context, commit)}


def test_an_azure_devops_run_links_its_commit_branch_and_build() -> None:
    facts = _facts({
        "ci_system": "azure-devops", "repository": "https://dev.azure.com/acme/infra/_git/live",
        "branch": "feature/db size", "pipeline_id": "12", "pipeline_name": "infra-ci",
        "run_id": "4711", "run_number": "20261205.3",
        "run_url": "https://dev.azure.com/acme/infra/_build/results?buildId=4711",
        "provenance": {"commit_sha": "verified", "branch": "verified", "stage": "reported"},
        "stage": "plan",
    })  # fmt: skip
    repo = "https://dev.azure.com/acme/infra/_git/live"
    assert facts["Commit"] == ContextFact("Commit", SHA, f"{repo}/commit/{SHA}")
    assert facts["Branch"].url == f"{repo}?version=GBfeature/db%20size"
    build = facts["Azure DevOps build"]
    assert build.text == "infra-ci #20261205.3" and build.url is not None
    assert build.url.endswith("_build/results?buildId=4711")
    assert facts["Its runs here"].url == "/console/runs?pipeline=infra-ci&pipeline_run=4711"
    assert facts["stage"].text == "plan" and facts["stage"].url is None
    assert facts["Verified by the caller's OIDC token"].text == "branch, commit_sha"


def test_an_airflow_run_links_its_dag_run_and_task_instance() -> None:
    task_url = ("https://airflow.example.com/dags/deploy/runs/manual__2026-12-05T01%3A00%3A00"
                "%2B00%3A00/tasks/apply?try_number=1")  # fmt: skip
    facts = _facts({
        "ci_system": "airflow", "pipeline_id": "deploy", "pipeline_name": "deploy",
        "run_id": "manual__2026-12-05T01:00:00+00:00", "job": "apply", "run_url": task_url,
        "repository": "https://github.com/acme/dags.git", "branch": "main",
        "airflow": {"dag_id": "deploy", "run_id": "manual__2026-12-05T01:00:00+00:00",
                    "task_id": "apply", "try_number": 1},
    })  # fmt: skip
    dag_run = facts["Airflow DAG run"]
    assert dag_run.text == "deploy / manual__2026-12-05T01:00:00+00:00"
    assert dag_run.url == task_url.split("/tasks/")[0]
    assert facts["Airflow task"] == ContextFact("Airflow task", "apply", task_url)
    assert facts["Commit"].url == f"https://github.com/acme/dags/commit/{SHA}"
    assert facts["Branch"].url == "https://github.com/acme/dags/tree/main"
    assert "airflow" not in facts  # its section is shown as the facts above


def test_without_a_known_url_a_fact_is_text_and_never_a_script_link() -> None:
    facts = _facts({
        "repository": "git@github.com:acme/live.git", "branch": "main",
        "run_url": "javascript:alert(1)", "commit_message": "<script>x</script>",
        "ci_system": "local",
    }, commit="not a sha")  # fmt: skip
    assert facts["Commit"].url is None and facts["Branch"].url is None
    assert all(f.url is None or f.url.startswith(("https://", "http://", "/console/"))
               for f in facts.values())  # fmt: skip
    assert facts["commit message"].text == "<script>x</script>"  # the template escapes it
    not_a_sha = _facts({"repository": "https://github.com/acme/live"}, commit="0a1b2c3; rm")
    assert not_a_sha["Commit"].url is None
