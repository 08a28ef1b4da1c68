"""The tofuflow control plane: state service (HTTP backend protocol), runs, auth, audit.

    app = create_app(ServerConfig.load())          # uvicorn.run(app); app.state.engine
    name = validate_workspace_name("app/prod")     # BadRequestError when it is not one

Public modules: ``config`` (``ServerConfig``), ``admin`` (tokens, key rotation, audit
check), ``checkpoints`` (signed audit checkpoints, offline export check), ``leases``
(leader election), ``reaping`` (what an in-server reaper needs),
``serving`` (the uvicorn configuration), ``auth``, ``crypto``, ``storage`` and ``api``
(the routers). Underscore modules are internal.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.server._state import state_aad, state_identity, validate_workspace_name
    from tofuflow.server.app import create_app

# Lazy, so `tofuflow.server.config` does not import FastAPI and SQLAlchemy.
_EXPORTS = {
    "create_app": "tofuflow.server.app",
    "state_aad": "tofuflow.server._state",
    "state_identity": "tofuflow.server._state",
    "validate_workspace_name": "tofuflow.server._state",
}
__all__ = ["create_app", "state_aad", "state_identity", "validate_workspace_name"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
