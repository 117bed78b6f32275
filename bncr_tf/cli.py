"""What the command-line entry points share.

- Quiet TensorFlow: `quiet_tensorflow()` (call before TensorFlow is
  imported) sets TF_CPP_MIN_LOG_LEVEL=3, which hides TensorFlow's C++ log
  lines (`failed call to cuInit`, `E0000 ... jpeg_mem.cc` and the like),
  unless the user set TF_CPP_MIN_LOG_LEVEL (then that level holds) or
  passed --verbose (nothing is hidden). The first import of TensorFlow
  after it also drops the few lines TensorFlow's C++ runtime prints while
  it loads, which that variable does not reach (oneDNN, "Could not find
  cuda drivers", CPU instructions), below the same level; anything else
  printed during the import (and everything, if the import fails) is
  passed on.
- Exit codes: `run(main)` runs an absl `main` with exit 2 and one
  `error: ...` line for every user error, flag-parsing errors included
  (absl alone exits 1 with `FATAL Flags parsing error`), and 130 / 143
  with one line for Ctrl-C / SIGTERM, never a traceback.

Entry points: bncr_tf.train, bncr_tf.evaluate, tools/export_savedmodel.py.
"""

import importlib.abc
import importlib.machinery
import os
import re
import sys

from bncr_tf import interrupts
from bncr_tf import quiet

EXIT_USER_ERROR = 2
VERBOSE_HELP = ("Show TensorFlow's C++ log messages (hidden by default; "
                "if TF_CPP_MIN_LOG_LEVEL is set, that level applies).")

def wants_verbose(argv):
    """True when argv asks for --verbose (read before flags are parsed)."""
    return any(a in ("--verbose", "--verbose=true", "--verbose=True",
                     "--verbose=1") for a in argv[1:])


def quiet_tensorflow(argv=None):
    """Hides TensorFlow's C++ logs unless asked for. Call before importing
    TensorFlow.

    Without --verbose: TF_CPP_MIN_LOG_LEVEL=3 unless the user set it, and
    whichever module first imports TensorFlow does so through
    `_QuietLoader`, which drops the lines TensorFlow's C++ runtime prints
    while it loads (before TF_CPP_MIN_LOG_LEVEL applies to them) below
    that level. With --verbose nothing is hidden.

    Returns:
      The level in force, or None with --verbose.
    """
    argv = sys.argv if argv is None else argv
    if wants_verbose(argv):
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        return None
    quiet.LEVEL[0] = level
    if level > 0 and "tensorflow" not in sys.modules and not any(
            isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(level))
    return level


def import_tensorflow():
    """Imports TensorFlow (quietly after `quiet_tensorflow`)."""
    import tensorflow
    return tensorflow


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of the `tensorflow` package with its load-time
    C++ lines dropped; everything else is delegated."""

    def __init__(self, loader, min_level):
        self._loader = loader
        self._min_level = min_level

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with quiet.native_stderr(self._min_level):
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, wrapping its loader in `_QuietLoader`."""

    def __init__(self, min_level):
        self._min_level = min_level

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self._min_level)
        return spec


def define_verbose():
    """Defines --verbose (see `quiet_tensorflow`)."""
    from absl import flags
    flags.DEFINE_bool("verbose", False, VERBOSE_HELP)


def warning(message):
    """Prints one `warning: ...` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def error(message):
    """Prints one `error: ...` line; returns the user-error exit code."""
    text = " ".join(str(message).split("\n")).strip()
    print(f"error: {text}", file=sys.stderr)
    return EXIT_USER_ERROR


def _parse_flags(argv):
    """absl's flag parsing, with exit 2 and one line on a bad flag."""
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        text = re.sub(r"^ERROR::\s*", "", str(e))
        sys.exit(error(f"{text} (see --helpfull)"))


def run(main):
    """`absl.app.run(main)` with this project's exit codes.

    `main(argv)` returns an exit code; it may raise `UserError` (exit 2,
    one line). Ctrl-C / SIGTERM exit 130 / 143 with one line (main may
    catch them first to say more, see bncr_tf.train).
    """
    from absl import app
    from bncr_tf.errors import UserError

    def wrapped(argv):
        try:
            if len(argv) > 1:
                raise UserError(
                    f"unexpected arguments: {' '.join(argv[1:])}")
            return main(argv)
        except UserError as e:
            return error(e)
        except KeyboardInterrupt as e:
            name = str(e) if isinstance(e, interrupts.Interrupted) \
                else "SIGINT"
            print(f"interrupted ({name})", file=sys.stderr)
            return interrupts.exit_code(e)

    interrupts.install()
    app.run(wrapped, flags_parser=_parse_flags)
