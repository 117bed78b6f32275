"""Checkpoints that survive kills, damage and full disks.

A `tf.train.CheckpointManager` commits a checkpoint by rewriting the state
file `checkpoints/checkpoint` (atomically, temp file + rename) after the
checkpoint's `.index` and `.data-*` files are complete. So:

- a run is resumable only when the state file names a checkpoint
  (`committed`); files of a save that was interrupted before the state file
  was rewritten (`ckpt-N_temp*/`, a lone `ckpt-N.index`) are ignored, and
  the temporary directories are removed (`remove_stale_temp`);
- `restore_latest_valid` restores the newest committed checkpoint that
  reads back completely (every tensor passes its crc32c check and every
  object of the model is matched) and falls back to older ones with a
  warning naming the damaged and the used checkpoint;
- `save` turns a failed write (no space left, I/O error) into
  `CheckpointWriteError` after removing the partial files; the previous
  checkpoint stays the committed one.

Nothing here reads flags; `bncr_tf.training.loop` decides what a failure
means for the run.
"""

import glob
import logging
import os
import re
import shutil

import tensorflow as tf

from bncr_tf.errors import UserError
from bncr_tf.training import rundir

log = logging.getLogger("bncr_tf")

STATE_FILE = rundir.CHECKPOINT_STATE_FILE
read_state = rundir.read_checkpoint_state


class CheckpointWriteError(UserError):
    """Writing a checkpoint failed; the previous one is still committed."""


def committed(ckpt_dir):
    """Committed checkpoint prefixes of a directory, newest first.

    The latest (`model_checkpoint_path`) comes first, then the others in
    reverse order of the state file; files that exist on disk but are not
    in the state file are not included.
    """
    state = read_state(ckpt_dir)
    if state is None:
        return []
    older = [p for p in reversed(state["paths"]) if p != state["latest"]]
    return [state["latest"]] + older


def _step_of(prefix):
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def _reason(error):
    """One line describing why a restore or write failed."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error) or \
        type(error).__name__
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text.strip())
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    first = text.splitlines()[0] if text else type(error).__name__
    # "<temporary file path>; No space left on device" -> the reason only.
    match = re.match(r"^/\S+; (.+)$", first)
    return (match.group(1) if match else first)[:300]


def remove_stale_temp(ckpt_dir):
    """Removes `*_temp*` directories left by interrupted saves.

    Only call this when no other process writes to `ckpt_dir`.

    Returns:
      The removed paths.
    """
    removed = []
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), "*_temp*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def damaged_message(bad, reason, used):
    """The one warning line for a damaged checkpoint that is skipped."""
    return (f"checkpoint {bad} is damaged ({reason}); using {used} "
            f"instead")


def _try_restore(checkpoint, path, partial):
    """Restores `path`; returns None, or the one-line reason it failed."""
    try:
        status = checkpoint.restore(path)
        if partial:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - any failure means damaged
        return _reason(e)
    return None


def restore_one(checkpoint, path, partial=False):
    """Restores one named checkpoint (no fallback: it was asked for).

    Raises:
      UserError: the checkpoint does not read back (one line, the reason).
    """
    reason = _try_restore(checkpoint, path, partial)
    if reason is not None:
        raise UserError(f"checkpoint {path} is damaged ({reason})")


def restore_latest_valid(checkpoint, ckpt_dir, partial=False, repair=True,
                         warn=None):
    """Restores the newest committed checkpoint that reads back intact.

    The one checkpoint selection of training (resume), evaluation
    (`bncr_tf.evaluate`) and export (tools/export_savedmodel.py). Each
    candidate is restored with `assert_existing_objects_matched()` (eager
    restores read every tensor, so truncated files, failed crc32c checks,
    missing data files and unreadable indexes all raise). When the newest
    is damaged, one warning per damaged checkpoint names it and the one
    used instead (`damaged_message`). With `repair` (training only) the
    state file is rewritten without the damaged checkpoints, so a
    `CheckpointManager` created afterwards neither lists nor deletes them
    by mistake (their files stay on disk until a save of the same step
    overwrites them); readers leave the run directory untouched.

    Args:
      checkpoint: a `tf.train.Checkpoint` (training: the full state;
        readers: the EMA generators only, with `partial`).
      ckpt_dir: the checkpoints directory.
      partial: the checkpoint object holds part of the saved state (only
        its own tensors are read and must be intact).
      repair: rewrite the state file without the damaged checkpoints.
      warn: function receiving each warning line (default: the bncr_tf
        logger's warning).
    Returns:
      (path restored, [(damaged path, reason), ...]).
    Raises:
      UserError: no committed checkpoint, or every one is damaged.
    """
    warn = warn or log.warning
    candidates = committed(ckpt_dir)
    if not candidates:
        raise UserError(f"{ckpt_dir} holds no committed checkpoint (its "
                        f"'{STATE_FILE}' file is missing or unreadable)")
    damaged = []
    for path in candidates:
        reason = _try_restore(checkpoint, path, partial)
        if reason is not None:
            damaged.append((path, reason))
            continue
        for bad, reason in damaged:
            warn(damaged_message(bad, reason, path))
        if damaged and repair:
            _forget(ckpt_dir, [bad for bad, _ in damaged], path)
        return path, damaged
    details = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in damaged)
    if repair:
        raise UserError(
            f"cannot resume from {ckpt_dir}: every checkpoint is damaged "
            f"({details}); start a new run with --resume=none")
    raise UserError(f"no usable checkpoint in {ckpt_dir}: every checkpoint "
                    f"is damaged ({details})")


def _forget(ckpt_dir, bad, latest):
    """Rewrites the state file without `bad`, naming `latest` as latest.

    Checkpoints newer than `latest` are dropped too (training resumes from
    `latest` and rewrites them). Paths stay relative, as the
    CheckpointManager writes them, so a run directory can be moved.
    """
    state = read_state(ckpt_dir)
    stamps = state["timestamps"]
    if len(stamps) != len(state["paths"]):
        stamps = [None] * len(state["paths"])
    keep = [(p, t) for p, t in zip(state["paths"], stamps)
            if p not in bad and _step_of(p) <= _step_of(latest)
            and p != latest]
    keep.append((latest, dict(zip(state["paths"], stamps)).get(latest)))
    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"'
              for p, _ in keep]
    if all(t is not None for _, t in keep):
        lines += [f"all_model_checkpoint_timestamps: {t!r}"
                  for _, t in keep]
    if state["last_preserved"] is not None:
        lines.append(f"last_preserved_timestamp: {state['last_preserved']!r}")
    rundir.atomic_write_text(os.path.join(ckpt_dir, STATE_FILE),
                             "\n".join(lines) + "\n")


def _remove_partial(prefix):
    """Deletes the files of an uncommitted save of `prefix`."""
    for path in glob.glob(glob.escape(prefix) + "_temp*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in [prefix + ".index"] + glob.glob(
            glob.escape(prefix) + ".data-*"):
        try:
            os.remove(path)
        except OSError:
            pass


def save(manager, step, name="ckpt"):
    """`manager.save(checkpoint_number=step)` with failed writes handled.

    Args:
      manager: the run's `tf.train.CheckpointManager`.
      step: the step number of the checkpoint.
      name: the manager's checkpoint_name.
    Returns:
      The committed checkpoint path.
    Raises:
      CheckpointWriteError: the write failed (disk full, I/O error). The
        partial files of this save are removed unless TF had already
        finished them, the committed state file is unchanged, and the
        checkpoint's save counter is put back, so a later save can retry.
    """
    counter = manager.checkpoint.save_counter
    count = int(counter.numpy())
    known = set(manager.checkpoints)
    prefix = os.path.join(manager.directory, f"{name}-{step}")
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError, ValueError) as e:
        finished = prefix in manager.checkpoints and prefix not in known
        if not finished:
            counter.assign(count)
            if prefix not in committed(manager.directory):
                _remove_partial(prefix)
        raise CheckpointWriteError(
            f"could not write checkpoint {prefix}: {_reason(e)}") from e


def read_tensors(prefix):
    """{name: numpy value} of every saved tensor of a checkpoint (without
    the object-graph record), for comparing checkpoints."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name)
            for name, _ in tf.train.list_variables(prefix)
            if "_CHECKPOINTABLE_OBJECT_GRAPH" not in name}
