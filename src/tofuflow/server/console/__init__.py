"""The web console: server-rendered pages on the control plane's own app.

    install_console(app, config, runs=run_service, state=state_service, bindings=bindings)

People sign in with their organisation's OpenID provider (``[console]`` in the server's
TOML, ``ConsoleSettings``); their ID token's claims map to roles through the same
``[[bindings]]`` as pipeline tokens. Pages: the runs list, a run (its plan per resource,
the decision, approvals, Approve/Reject for approvers, the live story), a workspace, and
a run's story from the audit log. ``issue_sign_in_link(app)`` signs in the local user of
an embedded plane once (``tofuflow ui``). See docs/console.md.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.server.console._app import install_console, install_offline_docs
    from tofuflow.server.console._settings import CONSOLE_KEYS, ConsoleSettings
    from tofuflow.server.console._sign_in import issue_sign_in_link

# Lazy: importing the package does not import Jinja2 and Authlib (config.py takes the
# settings from _settings itself: _app imports config).
_EXPORTS = {
    "CONSOLE_KEYS": "tofuflow.server.console._settings",
    "ConsoleSettings": "tofuflow.server.console._settings",
    "install_console": "tofuflow.server.console._app",
    "install_offline_docs": "tofuflow.server.console._app",
    "issue_sign_in_link": "tofuflow.server.console._sign_in",
}
__all__ = [
    "CONSOLE_KEYS",
    "ConsoleSettings",
    "install_console",
    "install_offline_docs",
    "issue_sign_in_link",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
