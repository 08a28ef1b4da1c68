"""tofuflow: run OpenTofu from pipelines and workflow schedulers, safely.

    from tofuflow import Tofu
    tf = Tofu("infra/")
    tf.init()
    if tf.plan(out="plan.tfplan").has_changes:
        tf.apply("plan.tfplan")

Names are imported on first use, so `import tofuflow` costs almost nothing.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports
from tofuflow._version import __version__

if TYPE_CHECKING:
    from tofuflow.errors import (
        BinaryError,
        BinaryNotFoundError,
        BinaryVersionError,
        ChecksumMismatchError,
        ConfigError,
        Diagnostic,
        DocumentError,
        InstallError,
        LockInfo,
        StateLockedError,
        StateWriteError,
        TofuCancelledError,
        TofuCrashError,
        TofuError,
        TofuflowError,
        TofuTimeoutError,
    )
    from tofuflow.tofu._binary import Binary, find_binary
    from tofuflow.tofu._events import Event
    from tofuflow.tofu._install import install, installed_versions
    from tofuflow.tofu._plan import Action, OutputChange, Plan, PlanCounts, ResourceChange
    from tofuflow.tofu._redact import Redactor
    from tofuflow.tofu._render import (
        render_plan_markdown,
        render_plan_text,
        render_state_outputs_text,
    )
    from tofuflow.tofu._state import State, StateInstance, StateOutput, StateResource
    from tofuflow.tofu._tofu import ApplyResult, PlanResult, Tofu

_EXPORTS = {
    "Action": "tofuflow.tofu._plan",
    "ApplyResult": "tofuflow.tofu._tofu",
    "Binary": "tofuflow.tofu._binary",
    "BinaryError": "tofuflow.errors",
    "BinaryNotFoundError": "tofuflow.errors",
    "BinaryVersionError": "tofuflow.errors",
    "ChecksumMismatchError": "tofuflow.errors",
    "ConfigError": "tofuflow.errors",
    "Diagnostic": "tofuflow.errors",
    "DocumentError": "tofuflow.errors",
    "Event": "tofuflow.tofu._events",
    "InstallError": "tofuflow.errors",
    "LockInfo": "tofuflow.errors",
    "OutputChange": "tofuflow.tofu._plan",
    "Plan": "tofuflow.tofu._plan",
    "PlanCounts": "tofuflow.tofu._plan",
    "PlanResult": "tofuflow.tofu._tofu",
    "Redactor": "tofuflow.tofu._redact",
    "ResourceChange": "tofuflow.tofu._plan",
    "State": "tofuflow.tofu._state",
    "StateInstance": "tofuflow.tofu._state",
    "StateLockedError": "tofuflow.errors",
    "StateOutput": "tofuflow.tofu._state",
    "StateResource": "tofuflow.tofu._state",
    "StateWriteError": "tofuflow.errors",
    "Tofu": "tofuflow.tofu._tofu",
    "TofuCancelledError": "tofuflow.errors",
    "TofuCrashError": "tofuflow.errors",
    "TofuError": "tofuflow.errors",
    "TofuTimeoutError": "tofuflow.errors",
    "TofuflowError": "tofuflow.errors",
    "find_binary": "tofuflow.tofu._binary",
    "install": "tofuflow.tofu._install",
    "installed_versions": "tofuflow.tofu._install",
    "render_plan_markdown": "tofuflow.tofu._render",
    "render_plan_text": "tofuflow.tofu._render",
    "render_state_outputs_text": "tofuflow.tofu._render",
}
__all__ = [
    "Action",
    "ApplyResult",
    "Binary",
    "BinaryError",
    "BinaryNotFoundError",
    "BinaryVersionError",
    "ChecksumMismatchError",
    "ConfigError",
    "Diagnostic",
    "DocumentError",
    "Event",
    "InstallError",
    "LockInfo",
    "OutputChange",
    "Plan",
    "PlanCounts",
    "PlanResult",
    "Redactor",
    "ResourceChange",
    "State",
    "StateInstance",
    "StateLockedError",
    "StateOutput",
    "StateResource",
    "StateWriteError",
    "Tofu",
    "TofuCancelledError",
    "TofuCrashError",
    "TofuError",
    "TofuTimeoutError",
    "TofuflowError",
    "__version__",
    "find_binary",
    "install",
    "installed_versions",
    "render_plan_markdown",
    "render_plan_text",
    "render_state_outputs_text",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
