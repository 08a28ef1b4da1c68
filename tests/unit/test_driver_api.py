"""The driver's public API is exactly tofuflow.tofu.__all__."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import tofuflow.tofu
from tofuflow.tofu import PlanOptions, Tofu

EXPECTED = {
    "Action", "ApplyOptions", "ApplyResult", "Binary", "DestroyOptions", "Event",
    "InitOptions", "OutputChange", "Plan", "PlanCounts", "PlanOptions", "PlanResult",
    "Redactor", "ResourceChange", "State", "StateInstance", "StateOutput",
    "StatePushOptions", "StateResource", "Tofu", "find_binary", "install",
    "installed_versions", "render_plan_markdown", "render_plan_text",
    "render_state_outputs_text", "DEFAULT_VERSION", "EventCallback", "OutputCallback",
    "parse_event", "read_record", "Masker", "attribute_changes", "path_text",
    "CHANGE_REASONS", "markdown_code", "markdown_text", "default_plugin_cache", "any_marked",
    "MINIMUM_VERSIONS", "normalise_version", "format_value",
}  # fmt: skip


def test_driver_api_is_pinned() -> None:
    assert set(tofuflow.tofu.__all__) == EXPECTED
    assert set(dir(tofuflow.tofu)) == EXPECTED
    for name in tofuflow.tofu.__all__:
        assert getattr(tofuflow.tofu, name) is not None


def test_the_methods_keywords_are_their_options_fields() -> None:
    shown = inspect.signature(Tofu.plan).parameters
    declared = inspect.signature(PlanOptions).parameters
    assert list(shown) == ["self", *declared]
    assert shown["refresh"].default is True
    assert shown["out"].annotation == declared["out"].annotation
    assert "timeout" in shown


def test_an_unknown_keyword_names_itself(tmp_path: Path) -> None:
    tf = Tofu(tmp_path)
    with pytest.raises(TypeError, match="tragets"):
        tf.plan(tragets=["x"])  # type: ignore[call-arg]
