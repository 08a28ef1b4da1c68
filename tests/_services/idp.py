"""A real OpenID provider (panva's ``oidc-provider`` on Node.js) on a loopback port.

    with openid_provider(port, client, redirect_uris, users) as issuer:
        ...  # issuer == "http://127.0.0.1:<port>"; its login page takes any password

``oidc-provider`` is installed once with npm into ``<repo>/.cache/npm`` (git-ignored), as
Azurite is (``_services/azurite.py``), so a fresh machine needs only Node.js and npm. The
provider is driven by ``oidc_provider.mjs`` beside this file: one confidential client,
PKCE required, the development login and consent pages, the users given here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _services.azurite import _free_port, _stop
from _services.npm import NPM_PREFIX, install_once

PACKAGE = "oidc-provider@9"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
START_TIMEOUT = 30.0

__all__ = ["free_port", "openid_provider"]

free_port = _free_port


@contextmanager
def openid_provider(
    port: int,
    client: tuple[str, str],
    redirect_uris: Sequence[str],
    users: Mapping[str, Mapping[str, Any]],
    post_logout_redirect_uris: Sequence[str] = (),
) -> Iterator[str]:
    """Yield the issuer URL of a running provider; stops it afterwards.
    ``post_logout_redirect_uris``: where its end-session endpoint may send the browser
    back to (RP-initiated logout)."""
    module = _find_or_install()
    client_id, client_secret = client
    config = {
        "port": port, "module": str(module), "client_id": client_id,
        "client_secret": client_secret, "redirect_uris": list(redirect_uris), "users": users,
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
    }  # fmt: skip
    node = shutil.which("node")
    if node is None:
        raise RuntimeError(_NO_NODE)
    with tempfile.TemporaryDirectory(prefix="oidc-provider-") as scratch:
        log_path = Path(scratch) / "provider.log"
        with log_path.open("wb") as log:
            # The config holds a test-only client secret: argv is fine for this fake IdP.
            proc = subprocess.Popen(
                [node, str(SCRIPT), json.dumps(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
            try:
                issuer = _wait_listening(proc, log_path)
                yield issuer
            finally:
                _stop(proc)


def _module() -> Path:
    return NPM_PREFIX / "node_modules" / "oidc-provider" / "lib" / "index.js"


def _find_or_install() -> Path:
    install_once(PACKAGE, _module().is_file, "the console's sign-in tests (oidc-provider)")
    return _module()


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("listening "):
                return line.split(" ", 1)[1].strip()
        time.sleep(0.1)
    status = f"exited with {proc.returncode}" if proc.poll() is not None else "did not start"
    log = log_path.read_text(errors="replace")[-4000:] or "(empty)"
    raise RuntimeError(f"oidc-provider {status} within {START_TIMEOUT:.0f}s. Its output:\n{log}")


_NO_NODE = (
    "the console's browser tests run a real OpenID provider (oidc-provider), which needs "
    "Node.js >= 20 and npm: install Node.js (`apt-get install nodejs npm`, `brew install "
    f"node`), or `npm install --prefix {NPM_PREFIX} {PACKAGE}`, then rerun."
)
