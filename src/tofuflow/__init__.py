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
    from tofuflow.tofu import (
        Action,
        ApplyResult,
        Binary,
        Event,
        OutputChange,
        Plan,
        PlanCounts,
        PlanResult,
        Redactor,
        ResourceChange,
        State,
        StateInstance,
        StateOutput,
        StateResource,
        Tofu,
        find_binary,
        install,
        installed_versions,
        render_plan_markdown,
        render_plan_text,
        render_state_outputs_text,
    )

_EXPORTS = {
    "Action": "tofuflow.tofu",
    "ApplyResult": "tofuflow.tofu",
    "Binary": "tofuflow.tofu",
    "BinaryError": "tofuflow.errors",
    "BinaryNotFoundError": "tofuflow.errors",
    "BinaryVersionError": "tofuflow.errors",
    "ChecksumMismatchError": "tofuflow.errors",
    "ConfigError": "tofuflow.errors",
    "Diagnostic": "tofuflow.errors",
    "DocumentError": "tofuflow.errors",
    "Event": "tofuflow.tofu",
    "InstallError": "tofuflow.errors",
    "LockInfo": "tofuflow.errors",
    "OutputChange": "tofuflow.tofu",
    "Plan": "tofuflow.tofu",
    "PlanCounts": "tofuflow.tofu",
    "PlanResult": "tofuflow.tofu",
    "Redactor": "tofuflow.tofu",
    "ResourceChange": "tofuflow.tofu",
    "State": "tofuflow.tofu",
    "StateInstance": "tofuflow.tofu",
    "StateLockedError": "tofuflow.errors",
    "StateOutput": "tofuflow.tofu",
    "StateResource": "tofuflow.tofu",
    "StateWriteError": "tofuflow.errors",
    "Tofu": "tofuflow.tofu",
    "TofuCancelledError": "tofuflow.errors",
    "TofuCrashError": "tofuflow.errors",
    "TofuError": "tofuflow.errors",
    "TofuTimeoutError": "tofuflow.errors",
    "TofuflowError": "tofuflow.errors",
    "find_binary": "tofuflow.tofu",
    "install": "tofuflow.tofu",
    "installed_versions": "tofuflow.tofu",
    "render_plan_markdown": "tofuflow.tofu",
    "render_plan_text": "tofuflow.tofu",
    "render_state_outputs_text": "tofuflow.tofu",
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
