"""The run's private directory and the 0600 files in it (tokens, credential configs).

with private_dir() as workdir:               # 0700, removed on exit, also on errors
    write_private(workdir / "token", token)  # 0600, replaced atomically
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["private_dir", "write_private"]


@contextlib.contextmanager
def private_dir(base: Path | str | None = None) -> Iterator[Path]:
    """A fresh 0700 directory under ``base`` (default: the system temp dir), removed on
    exit whatever happens inside (exceptions, KeyboardInterrupt, generator close)."""
    path = Path(tempfile.mkdtemp(prefix="tofuflow-identity-", dir=base))
    try:
        os.chmod(path, 0o700)  # mkdtemp already does; stated, because it is the guarantee
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_private(path: Path, content: str) -> Path:
    """Write ``content`` to ``path`` with mode 0600, atomically.

    The file is created 0600 from the start (never world-readable for an instant) and
    swapped in with ``os.replace``, so an SDK re-reading it mid-refresh sees the old or
    the new token, never half of one.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(content)
        os.chmod(temp, 0o600)  # mkstemp creates 0600; stated for the same reason
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path
