"""Native (C/C++) output on stderr, filtered when an entry point is quiet.

TensorFlow's C++ runtime prints some log lines before TF_CPP_MIN_LOG_LEVEL
applies to them (while it loads), and libjpeg / libpng print their
messages for bad files ("Corrupt JPEG data: ...", "Improper call to JPEG
library in state 201", "libpng warning: ...") straight to file descriptor
2. `native_stderr()` captures descriptor 2 for a block and passes on the
rest. It does nothing unless `LEVEL[0]` is set (by
`bncr_tf.cli.quiet_tensorflow`, i.e. not with --verbose), so library use
and tests see everything.
"""

import contextlib
import os
import re
import sys
import tempfile

# The TF_CPP_MIN_LOG_LEVEL in force in a quiet entry point (None: not
# quiet).
LEVEL = [None]

# A C++ log line: severity letter (I, W, E, F), date, time, thread, file.
_CPP_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() "
_CONTINUATION = "To enable the following instructions: "
# What Python itself writes to stderr (tracebacks, warnings, exceptions).
_PYTHON = re.compile(r"^(Traceback |  |\S*\s*\w*(Warning|Error|Exception)"
                     r"\b.*:)")


def keep_lines(lines, min_level, native=False):
    """The lines to pass on: C++ log lines below `min_level` (0 = I ...
    3 = F, as TF_CPP_MIN_LOG_LEVEL) and their continuation are dropped;
    with `native`, so is every other line that is not Python's own
    (traceback, warning, exception)."""
    kept, dropped_last = [], False
    for line in lines:
        match = _CPP_LINE.match(line)
        if match:
            dropped_last = "IWEF".index(match.group(1)) < min_level
        elif line.startswith(_ABSL_PREINIT):
            dropped_last = min_level > 0
        elif line.startswith(_CONTINUATION) and dropped_last:
            pass
        else:
            dropped_last = native and not _PYTHON.match(line)
        if not dropped_last:
            kept.append(line)
    return kept


@contextlib.contextmanager
def native_stderr(min_level=None, native=False):
    """Captures file descriptor 2 during the block and passes on what
    `keep_lines` keeps (everything, if the block raises and not
    `native`). A no-op when not quiet (`LEVEL[0]` is None and no
    `min_level` is given)."""
    level = LEVEL[0] if min_level is None else min_level
    if not level:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    ok = False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
            # A failed TensorFlow import shows everything; a failed data
            # scan still drops the native lines (its error says why).
            for line in (keep_lines(lines, level, native)
                         if ok or native else lines):
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
