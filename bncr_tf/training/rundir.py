"""Run directories: numbered, never overwritten, resumable.

Layout of `<outdir>/<NNNNN>-<name>/`:
  config.json, config.flags   the resolved configuration
  log.txt                     the status lines
  stats.jsonl                 one JSON object per tick
  checkpoints/                tf.train.CheckpointManager files
  grids/                      reals.png and fakes-<step>.png
  tb/                         TensorBoard events
  export/                     SavedModels (see bncr_tf.export)
"""

import os
import re

from bncr_tf.training.config import UserError

_RUN_RE = re.compile(r"^(\d{5})-(.+)$")


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
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(ckpt_dir) and any(
        f.endswith(".index") for f in os.listdir(ckpt_dir))


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
