"""`tofuflow init`'s scan: which directories are root modules, and their workspace names."""

from __future__ import annotations

import json
from pathlib import Path

from tofuflow.cli._init_cmd import find_root_modules, render_project
from tofuflow.project import load_project


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_configuration_at_the_top_is_named_after_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "my infra"
    _write(repo / "main.tf", 'resource "terraform_data" "x" {}\n')
    roots, _ = find_root_modules(repo)
    assert [(r.name, r.directory) for r in roots] == [("my-infra", ".")]


def test_names_are_made_valid_for_the_state_service(tmp_path: Path) -> None:
    for directory in ("envs/prod env", "envs/lock", "_x/y"):
        _write(tmp_path / directory / "main.tf", "")
    roots, _ = find_root_modules(tmp_path)
    assert [r.name for r in roots] == ["x/y", "envs/lock-config", "envs/prod-env"]
    (tmp_path / "tofuflow.toml").write_text(render_project(roots))
    assert len(load_project(tmp_path / "tofuflow.toml").workspaces) == 3


def test_module_sources_in_json_and_single_line_blocks_count(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "main.tf.json", json.dumps({"module": {"m": {"source": "../m1"}}}))
    _write(tmp_path / "b" / "main.tofu", 'module "m" { source = "../m2" }\n')
    _write(tmp_path / "m1" / "main.tf", "")
    _write(tmp_path / "m2" / "main.tf", "")
    roots, modules = find_root_modules(tmp_path)
    assert [r.name for r in roots] == ["a", "b"] and modules == ["m1", "m2"]


def test_comments_do_not_count_but_strings_that_look_like_them_do(tmp_path: Path) -> None:
    _write(
        tmp_path / "app" / "main.tf",
        '/* module "x" { source = "../m1" } */\n'
        '// module "y" { source = "../m2" }\n'
        'variable "url" { default = "https://example.com//x" } # source = "../m3"\n'
        'variable "need" {\n  validation {\n    condition = true\n  }\n}\n',
    )
    for name in ("m1", "m2", "m3"):
        _write(tmp_path / name / "main.tf", "")
    roots, modules = find_root_modules(tmp_path)
    assert modules == []
    assert [r.required for r in roots if r.name == "app"] == [("need",)]


def test_a_reused_directory_with_its_own_backend_is_still_a_root(tmp_path: Path) -> None:
    _write(tmp_path / "shared" / "main.tf", 'terraform {\n  backend "gcs" {}\n}\n')
    _write(tmp_path / "app" / "main.tf", 'module "s" {\n  source = "../shared"\n}\n')
    roots, modules = find_root_modules(tmp_path)
    assert [(r.name, r.backend) for r in roots] == [("app", None), ("shared", "gcs")]
    assert modules == []


def test_tfvars_beside_a_root_are_proposed_except_those_loaded_anyway(tmp_path: Path) -> None:
    for name in ("main.tf", "prod.tfvars", "terraform.tfvars", "x.auto.tfvars"):
        _write(tmp_path / "app" / name, "")
    roots, _ = find_root_modules(tmp_path)
    assert roots[0].var_files == ("app/prod.tfvars",)
    assert '# var_files = ["app/prod.tfvars"]' in render_project(roots)


def test_several_var_files_make_a_workspace_each_json_ones_too(tmp_path: Path) -> None:
    _write(tmp_path / "app" / "main.tf", 'variable "size" {}\nvariable "zone" {}\n')
    _write(tmp_path / "app" / "staging.tfvars.json", '{"size": 1, "zone": "a"}')
    _write(tmp_path / "app" / "production.tfvars", "size = 3\n")
    _write(tmp_path / "app" / "zone.auto.tfvars", 'zone = "b"\n')
    roots, _ = find_root_modules(tmp_path)
    assert [(r.name, r.var_files, r.required, r.production) for r in roots] == [
        ("app/production", ("app/production.tfvars",), (), True),
        ("app/staging", ("app/staging.tfvars.json",), (), False),
    ]
    text = render_project(roots)
    assert 'var_files = ["app/staging.tfvars.json"]' in text
    assert text.count('\ntags = ["production"]') == 1


def test_var_files_below_count_only_from_a_directory_of_var_files(tmp_path: Path) -> None:
    _write(tmp_path / "app" / "main.tf", "")
    _write(tmp_path / "app" / "envs" / "dev.tfvars", "")
    _write(tmp_path / "app" / "envs" / "prod.tfvars.json", "{}")
    _write(tmp_path / "app" / ".terraform" / "x.tfvars", "")  # hidden: never searched
    # A directory below with its own configuration is its own root, not var files.
    _write(tmp_path / "app" / "child" / "main.tf", "")
    _write(tmp_path / "app" / "child" / "stage.tfvars", "")
    roots, _ = find_root_modules(tmp_path)
    assert [(r.name, r.var_files) for r in roots] == [
        ("app/dev", ("app/envs/dev.tfvars",)),
        ("app/prod", ("app/envs/prod.tfvars.json",)),
        ("app/child", ("app/child/stage.tfvars",)),
    ]


def test_a_shared_var_file_goes_to_every_environment_not_a_workspace_of_its_own(
    tmp_path: Path,
) -> None:
    """envs/common.tfvars beside envs/dev.tfvars and envs/prod.tfvars is what every
    environment is planned with (`-var-file=common.tfvars -var-file=dev.tfvars`): a
    workspace of its own would plan the configuration with no environment at all."""
    _write(tmp_path / "app" / "main.tf", 'variable "region" {}\nvariable "size" {}\n')
    _write(tmp_path / "app" / "envs" / "common.tfvars", 'region = "eu-west-1"\n')
    _write(tmp_path / "app" / "envs" / "dev.tfvars", "size = 1\n")
    _write(tmp_path / "app" / "envs" / "prod.tfvars", "size = 3\n")
    roots, _ = find_root_modules(tmp_path)
    assert [(r.name, r.var_files, r.required, r.production) for r in roots] == [
        ("app/dev", ("app/envs/common.tfvars", "app/envs/dev.tfvars"), (), False),
        ("app/prod", ("app/envs/common.tfvars", "app/envs/prod.tfvars"), (), True),
    ]
    text = render_project(roots)
    assert 'var_files = ["app/envs/common.tfvars", "app/envs/prod.tfvars"]' in text
    (tmp_path / "tofuflow.toml").write_text(text)
    assert set(load_project(tmp_path / "tofuflow.toml").workspaces) == {"app/dev", "app/prod"}


def test_the_commented_depends_on_names_a_workspace_of_the_file(tmp_path: Path) -> None:
    """Uncommenting the example must give a file that loads: it names another workspace
    init proposed, not a made-up "network"."""
    _write(tmp_path / "app" / "main.tf", "")
    _write(tmp_path / "db" / "main.tf", "")
    roots, _ = find_root_modules(tmp_path)
    text = render_project(roots)
    assert '# depends_on = ["db"]' in text and '# depends_on = ["app"]' in text
    assert "network" not in text
    uncommented = text.replace('# depends_on = ["db"]', 'depends_on = ["db"]', 1)
    (tmp_path / "tofuflow.toml").write_text(uncommented)
    assert load_project(tmp_path / "tofuflow.toml").workspace("app").depends_on == ("db",)
