"""Ctrl-C and SIGTERM as one exception, deferred while a checkpoint is
written.

`install()` (called by the command-line entry points, in the main thread)
makes SIGINT and SIGTERM raise `Interrupted`, a KeyboardInterrupt that
remembers its signal. Inside `deferred()` a signal is held back and raised
when the block ends, so a checkpoint or an export is never cut short by a
signal this process handles (SIGKILL still can; see docs/reliability.md).
Without `install()` (library use, tests) Ctrl-C is Python's plain
KeyboardInterrupt and `deferred()` holds nothing back.
"""

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state = {"installed": False, "depth": 0, "pending": None}


def _handler(signum, frame):
    del frame
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def install():
    """SIGINT and SIGTERM raise `Interrupted` from now on (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)
    _state["installed"] = True


def exit_code(error):
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


@contextlib.contextmanager
def deferred():
    """Holds SIGINT / SIGTERM back until the block ends, then raises."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        pending = _state["pending"]
        if not _state["depth"] and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)
