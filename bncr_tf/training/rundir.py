"""Run directories: numbered, never overwritten, resumable.

Layout of `<outdir>/<NNNNN>-<name>/`:
  config.json, config.flags   the resolved configuration
  log.txt                     the status lines
  stats.jsonl                 one JSON object per tick
  checkpoints/                tf.train.CheckpointManager files
  grids/                      reals.png and fakes-<step>.png
  tb/                         TensorBoard events
  export/                     SavedModels (see bncr_tf.export)

A run survives being killed at any moment: small files are replaced
atomically (`atomic_write_text`), a run counts as resumable only once its
checkpoint state file names a checkpoint (TensorFlow writes that file last,
see bncr_tf.training.checkpoints), and `truncate_jsonl` drops the records a
resumed run recomputes.
"""

import glob
import json
import os
import re

from bncr_tf import fileio
from bncr_tf.errors import UserError

_RUN_RE = re.compile(r"^(\d{5})-(.+)$")
CHECKPOINT_STATE_FILE = "checkpoint"
_STATE_LINE = re.compile(
    r'^\s*(model_checkpoint_path|all_model_checkpoint_paths|'
    r'all_model_checkpoint_timestamps|last_preserved_timestamp)'
    r'\s*:\s*"?([^"]*)"?\s*$')


def atomic_write_text(path, text):
    """Replaces `path` by `text` atomically (see `fileio.atomic_write_bytes`).

    Raises:
      OSError: the write failed (e.g. no space left); `path` is unchanged.
    """
    fileio.atomic_write_text(path, text)


def remove_temporary_files(run_dir):
    """Removes the temporary files a killed process left in a run directory.

    These are the `.<name>.*.tmp` files of `atomic_write_text` and the
    `grids/*.png.tmp` files of `grids.write_png` and the temporary file of
    `events.truncate_events` in tb/. Only call this when no
    other process writes to `run_dir`.

    Returns:
      The removed paths.
    """
    removed = []
    root = glob.escape(run_dir)
    for pattern in (os.path.join(root, ".*.tmp"),
                    os.path.join(root, "tb", ".*.tmp"),
                    os.path.join(root, "grids", "*.tmp"),
                    os.path.join(root, "grids", ".*.tmp")):
        for path in glob.glob(pattern):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def read_checkpoint_state(ckpt_dir):
    """Parses a CheckpointManager state file (`<ckpt_dir>/checkpoint`).

    Args:
      ckpt_dir: a checkpoints directory.
    Returns:
      dict with "latest" (prefix path), "paths" (prefix paths, oldest
      first, the latest included), "timestamps" (floats in the same order,
      possibly empty) and "last_preserved" (float or None); None when the
      file is missing, unreadable or names no checkpoint.
    """
    path = os.path.join(ckpt_dir, CHECKPOINT_STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    state = {"latest": None, "paths": [], "timestamps": [],
             "last_preserved": None}
    for line in lines:
        match = _STATE_LINE.match(line)
        if not match:
            if line.strip():
                return None
            continue
        key, value = match.groups()
        try:
            if key == "model_checkpoint_path":
                state["latest"] = os.path.join(ckpt_dir, value)
            elif key == "all_model_checkpoint_paths":
                state["paths"].append(os.path.join(ckpt_dir, value))
            elif key == "all_model_checkpoint_timestamps":
                state["timestamps"].append(float(value))
            else:
                state["last_preserved"] = float(value)
        except ValueError:
            return None
    if not state["latest"] or state["latest"] == ckpt_dir + os.sep:
        return None
    if state["latest"] not in state["paths"]:
        state["paths"].append(state["latest"])
    return state


def truncate_jsonl(path, max_step):
    """Keeps the records of a JSON-lines log up to `max_step`.

    Used when a run resumes from the checkpoint of step `max_step`: the
    records written after it (by the interrupted process) are recomputed,
    so they are dropped, as is a last line cut off by a kill. The file is
    rewritten atomically, and only when something is dropped.

    Args:
      path: a .jsonl file whose records carry an integer "step".
      max_step: the largest step to keep.
    Returns:
      The number of lines dropped (0 if the file does not exist).
    """
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    keep, dropped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and (
                not isinstance(record.get("step"), (int, float))
                or record["step"] <= max_step)
        except ValueError:
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in keep))
    return dropped


def _runs(outdir):
    """Yields (number, name, path) of the run directories in `outdir`."""
    if not os.path.isdir(outdir):
        return
    for entry in sorted(os.listdir(outdir)):
        match = _RUN_RE.match(entry)
        path = os.path.join(outdir, entry)
        if match and os.path.isdir(path):
            yield int(match.group(1)), match.group(2), path


def has_checkpoint(run_dir):
    """True when the run's checkpoint state file names a checkpoint.

    TensorFlow rewrites the state file only after a checkpoint's files are
    complete, so the files of a save that was interrupted (a kill during
    the first save of a run) do not make a run resumable.
    """
    return read_checkpoint_state(
        os.path.join(run_dir, "checkpoints")) is not None


def newest_run(outdir, name):
    """Returns the newest run directory called `name` in `outdir`, or None."""
    found = [p for _, n, p in _runs(outdir) if n == name]
    return found[-1] if found else None


def last_logged_step(run_dir):
    """The largest "step" in the run's stats.jsonl (0 if none or no run).

    Lines that do not parse (a write cut by a kill) are skipped.
    """
    path = os.path.join(run_dir or "", "stats.jsonl")
    step = 0
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    step = max(step, int(json.loads(line).get("step", 0)))
                except (ValueError, AttributeError):
                    continue
    return step


def logged_series(run_dir, key):
    """(steps, values) of one stats.jsonl key, in file order.

    Lines that do not parse, or lack the key, are skipped.
    """
    steps, values = [], []
    path = os.path.join(run_dir or "", "stats.jsonl")
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    if key in rec:
                        steps.append(int(rec["step"]))
                        values.append(rec[key])
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
    return steps, values


def find_resumable(outdir, name):
    """Returns the newest run called `name` that has a checkpoint, or None."""
    found = [p for _, n, p in _runs(outdir) if n == name and has_checkpoint(p)]
    return found[-1] if found else None


def new_run_dir(outdir, name):
    """Creates `<outdir>/<next number>-<name>` and returns its path.

    Directory creation is atomic (os.mkdir fails if the number is taken), so
    two runs started at once never share a directory.
    """
    os.makedirs(outdir, exist_ok=True)
    number = max((n for n, _, _ in _runs(outdir)), default=-1) + 1
    while True:
        path = os.path.join(outdir, f"{number:05d}-{name}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            number += 1


def check_resume_arg(resume):
    """Rejects an explicit --resume directory that does not exist (before
    TensorFlow starts or data are read); "auto" and "none" pass."""
    if resume not in ("auto", "none") and not os.path.isdir(resume):
        raise UserError(f"--resume directory {resume} does not exist")


def resolve_run_dir(outdir, name, resume):
    """Chooses the run directory for a new or resumed run.

    Args:
      outdir: parent directory of all runs.
      name: the run name (without the number prefix).
      resume: "auto" (continue the newest run of this name that has a
        checkpoint, else start a new one), "none" (always a new run) or the
        path of a run directory to continue.
    Returns:
      (run_dir, resuming) where resuming says whether a checkpoint exists.
    Raises:
      UserError: if an explicit resume directory has no checkpoint.
    """
    if resume == "none":
        return new_run_dir(outdir, name), False
    if resume == "auto":
        found = find_resumable(outdir, name)
        if found:
            return found, True
        return new_run_dir(outdir, name), False
    if not os.path.isdir(resume):
        raise UserError(f"--resume directory {resume} does not exist")
    if not has_checkpoint(resume):
        raise UserError(f"--resume directory {resume} holds no checkpoint")
    return resume, True
