"""One provider plugin cache for every stack, with ``init`` serialised under a file lock.

The binary's plugin cache is not safe for concurrent ``init``s: two of them installing the
same provider at once can leave a half-written package that the other links. Every stack
of a ``run-all`` uses the same cache (``TF_PLUGIN_CACHE_DIR``, else
``<user cache dir>/plugins``), so each provider is downloaded once, and every ``init``
holds an exclusive ``fcntl`` lock on ``<cache>/.tofuflow-init.lock`` while it runs. Other
commands (plan, apply, show, output) never write to the cache and run in parallel.

How ``init`` gets the lock without changing the run lifecycle: the stacks run the binary
through a two-line shell script (``locking_binary``) that hands ``init`` to a tiny Python
helper, which takes the lock and then ``exec``s the real binary. A POSIX record lock
belongs to the process and survives ``exec``, so it is held for exactly as long as the
binary's ``init`` runs, released by the kernel when it exits (also when it is killed), and
never inherited by the binary's children. Signals (the runner's SIGINT on cancel) reach the
binary directly because the script and the helper ``exec`` rather than fork. The lock is
between processes, so two ``run-all``s on one machine (or a ``run-all`` and a test) also
take turns.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tofuflow.tofu import Binary

__all__ = ["LOCK_NAME", "init_lock", "locking_binary", "plugin_cache_dir"]

LOCK_NAME = ".tofuflow-init.lock"

# Runs as `python -I -S helper.py REAL ARGS...`: no site, no user environment, stdlib only.
_HELPER = """\
import fcntl, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # cancelled while waiting: just stop
real, argv = sys.argv[1], sys.argv[2:]
cache = os.environ.get("TF_PLUGIN_CACHE_DIR")
if cache:
    os.makedirs(cache, exist_ok=True)
    fd = os.open(os.path.join(cache, {lock!r}), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    os.set_inheritable(fd, True)  # keep it open (and so locked) in the binary
os.execv(real, [real, *argv])
"""


def plugin_cache_dir() -> Path:
    """The cache every stack's binary uses: what ``Tofu`` picks when not told otherwise."""
    from tofuflow.tofu import default_plugin_cache

    return Path(os.environ.get("TF_PLUGIN_CACHE_DIR") or default_plugin_cache())


@contextmanager
def init_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the cache's ``init`` lock in this process (what the helper does for a binary)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def locking_binary(binary: Binary) -> Iterator[Binary]:
    """``binary``, wrapped so that its ``init`` waits for the plugin cache's lock.

    The wrapper lives in a private temporary directory removed on exit.
    """
    with tempfile.TemporaryDirectory(prefix="tofuflow-stacks-") as tmp:
        helper = Path(tmp) / "init_lock.py"
        helper.write_text(_HELPER.format(lock=LOCK_NAME))
        script = Path(tmp) / binary.flavor
        real, python = shlex.quote(str(binary.path)), shlex.quote(sys.executable)
        script.write_text(
            "#!/bin/sh\n"
            "# tofuflow run-all: `init` waits for the plugin cache lock; the rest runs as is.\n"
            f'[ "$1" = init ] && exec {python} -I -S {shlex.quote(str(helper))} {real} "$@"\n'
            f'exec {real} "$@"\n'
        )
        script.chmod(0o700)
        yield Binary(script, binary.flavor, binary.version)
