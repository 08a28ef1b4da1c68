"""Driving the tofu/terraform binary: discovery, install, commands, plan and state."""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.tofu._binary import MINIMUM_VERSIONS, Binary, find_binary
    from tofuflow.tofu._events import Event, parse_event
    from tofuflow.tofu._install import (
        DEFAULT_VERSION,
        install,
        installed_versions,
        normalise_version,
        read_record,
    )
    from tofuflow.tofu._options import (
        ApplyOptions,
        DestroyOptions,
        InitOptions,
        PlanOptions,
        StatePushOptions,
    )
    from tofuflow.tofu._plan import Action, OutputChange, Plan, PlanCounts, ResourceChange
    from tofuflow.tofu._plan_view import CHANGE_REASONS
    from tofuflow.tofu._process import EventCallback, OutputCallback
    from tofuflow.tofu._redact import Redactor
    from tofuflow.tofu._render import (
        markdown_code,
        markdown_text,
        render_plan_markdown,
        render_plan_text,
        render_state_outputs_text,
    )
    from tofuflow.tofu._state import State, StateInstance, StateOutput, StateResource
    from tofuflow.tofu._tofu import ApplyResult, PlanResult, Tofu, default_plugin_cache
    from tofuflow.tofu._values import (
        Masker,
        any_marked,
        attribute_changes,
        format_value,
        path_text,
    )

_EXPORTS = {
    "default_plugin_cache": "tofuflow.tofu._tofu",
    "Masker": "tofuflow.tofu._values",
    "any_marked": "tofuflow.tofu._values",
    "attribute_changes": "tofuflow.tofu._values",
    "format_value": "tofuflow.tofu._values",
    "path_text": "tofuflow.tofu._values",
    "CHANGE_REASONS": "tofuflow.tofu._plan_view",
    "markdown_code": "tofuflow.tofu._render",
    "markdown_text": "tofuflow.tofu._render",
    "DEFAULT_VERSION": "tofuflow.tofu._install",
    "MINIMUM_VERSIONS": "tofuflow.tofu._binary",
    "normalise_version": "tofuflow.tofu._install",
    "Action": "tofuflow.tofu._plan",
    "ApplyOptions": "tofuflow.tofu._options",
    "ApplyResult": "tofuflow.tofu._tofu",
    "Binary": "tofuflow.tofu._binary",
    "DestroyOptions": "tofuflow.tofu._options",
    "Event": "tofuflow.tofu._events",
    "EventCallback": "tofuflow.tofu._process",
    "OutputCallback": "tofuflow.tofu._process",
    "parse_event": "tofuflow.tofu._events",
    "InitOptions": "tofuflow.tofu._options",
    "OutputChange": "tofuflow.tofu._plan",
    "Plan": "tofuflow.tofu._plan",
    "PlanCounts": "tofuflow.tofu._plan",
    "PlanOptions": "tofuflow.tofu._options",
    "PlanResult": "tofuflow.tofu._tofu",
    "Redactor": "tofuflow.tofu._redact",
    "ResourceChange": "tofuflow.tofu._plan",
    "State": "tofuflow.tofu._state",
    "StateInstance": "tofuflow.tofu._state",
    "StateOutput": "tofuflow.tofu._state",
    "StatePushOptions": "tofuflow.tofu._options",
    "StateResource": "tofuflow.tofu._state",
    "Tofu": "tofuflow.tofu._tofu",
    "find_binary": "tofuflow.tofu._binary",
    "install": "tofuflow.tofu._install",
    "installed_versions": "tofuflow.tofu._install",
    "read_record": "tofuflow.tofu._install",
    "render_plan_markdown": "tofuflow.tofu._render",
    "render_plan_text": "tofuflow.tofu._render",
    "render_state_outputs_text": "tofuflow.tofu._render",
}
__all__ = [
    "CHANGE_REASONS",
    "DEFAULT_VERSION",
    "MINIMUM_VERSIONS",
    "Action",
    "ApplyOptions",
    "ApplyResult",
    "Binary",
    "DestroyOptions",
    "Event",
    "EventCallback",
    "InitOptions",
    "Masker",
    "OutputCallback",
    "OutputChange",
    "Plan",
    "PlanCounts",
    "PlanOptions",
    "PlanResult",
    "Redactor",
    "ResourceChange",
    "State",
    "StateInstance",
    "StateOutput",
    "StatePushOptions",
    "StateResource",
    "Tofu",
    "any_marked",
    "attribute_changes",
    "default_plugin_cache",
    "find_binary",
    "format_value",
    "install",
    "installed_versions",
    "markdown_code",
    "markdown_text",
    "normalise_version",
    "parse_event",
    "path_text",
    "read_record",
    "render_plan_markdown",
    "render_plan_text",
    "render_state_outputs_text",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
