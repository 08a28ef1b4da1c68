"""Ctrl-C while ``tofuflow`` starts: one line and exit 130, not a traceback.

Loading the command's modules takes a tenth of a second, and a Ctrl-C in it would print
the traceback of whichever import it landed in. ``tofuflow.cli`` imports this module
first, and calls ``started()`` once it has loaded the rest.
"""

from __future__ import annotations

# _signal (no stub), not signal: that one imports enum, milliseconds of the start guarded.
import _signal as signal  # type: ignore[import-not-found]
import os

__all__ = ["started"]


def _interrupted(signum: int, frame: object) -> None:
    del frame
    os.write(2, b"Error: interrupted while tofuflow was starting: nothing was done\n")
    os._exit(128 + signum)


def _install() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # SIGINT ignored (a background job), or a host's own handler: left alone
    try:
        signal.signal(signal.SIGINT, _interrupted)
    except ValueError:  # imported outside the main thread: a library user, not a start
        return


def started() -> None:
    """Python's handler again, whose KeyboardInterrupt the commands turn into what stands."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_install()
