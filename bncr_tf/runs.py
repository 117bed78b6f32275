"""Reading a run directory back: its config and its EMA generators.

Used by evaluation, export and the reports, so none of them depends on the
trainer's internals: a run directory's config.json rebuilds every network
and its checkpoints restore the weights.
"""

import json
import os
import re

import tensorflow as tf

from bncr_tf import models
from bncr_tf.config import TrainConfig
from bncr_tf.errors import UserError
from bncr_tf.training import checkpoints


def load_config(run_dir):
    """Returns the `TrainConfig` stored in `<run_dir>/config.json`."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    with open(path) as f:
        return TrainConfig.from_dict(json.load(f))


def checkpoint_step(path):
    """The step of a "<name>-<step>" checkpoint prefix (None if none)."""
    match = re.search(r"-(\d+)$", str(path))
    return int(match.group(1)) if match else None


def checkpoint_path(run_dir, checkpoint=None):
    """Resolves a checkpoint: None = the latest named by the state file
    (not checked for damage, see `restore_generators`), a step number or
    a prefix path.

    Raises:
      UserError: it does not exist.
    """
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if checkpoint is None:
        path = tf.train.latest_checkpoint(ckpt_dir)
        if path is None:
            raise UserError(f"{run_dir} has no checkpoint in {ckpt_dir}")
        return path
    if str(checkpoint).isdigit():
        path = os.path.join(ckpt_dir, f"ckpt-{int(checkpoint)}")
    else:
        path = str(checkpoint)
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"checkpoint {path} does not exist")
    return path


def build_generators(config, ema=True):
    """A run's generators, untrained (names of the EMA copies if `ema`)."""
    return models.build_generators(config, "_ema" if ema else "")


def restore_generators(run_dir, gens, checkpoint=None, ema=True,
                       warn=None):
    """Restores generators from a run's checkpoint.

    Args:
      run_dir: the run directory.
      gens: `build_generators(config, ema)` of the run's config.
      checkpoint: None or "latest" (the newest that reads back intact,
        falling back from damaged ones with a warning exactly as a resumed
        training does: `checkpoints.restore_latest_valid`), a step number
        or a checkpoint prefix path (that one, or a UserError).
      ema: restore the EMA weights (what samples, FID and export use).
      warn: function receiving the warning about a damaged checkpoint.
    Returns:
      The restored checkpoint path.
    Raises:
      UserError: no checkpoint, or the chosen one(s) damaged.
    """
    suffix = "_ema" if ema else ""
    ckpt = tf.train.Checkpoint(**{
        name + suffix: models.checkpoint_variables(model)
        for name, model in gens.models().items()})
    if checkpoint in (None, "", "latest"):
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        if checkpoints.read_state(ckpt_dir) is None:
            raise UserError(f"{run_dir} has no checkpoint in {ckpt_dir}")
        path, _ = checkpoints.restore_latest_valid(
            ckpt, ckpt_dir, partial=True, repair=False, warn=warn)
        return path
    path = checkpoint_path(run_dir, checkpoint)
    checkpoints.restore_one(ckpt, path, partial=True)
    return path


def load_generators(run_dir, checkpoint=None, ema=True, warn=None):
    """Rebuilds a run's generators and restores their weights.

    Args:
      run_dir: a run directory written by `bncr_tf.train`.
      checkpoint: None (the latest intact one), a step number, or a
        checkpoint path (see `restore_generators`).
      ema: restore the EMA weights (what samples, FID and export use);
        False restores the raw training weights.
      warn: function receiving the warning about a damaged checkpoint.
    Returns:
      (config, `synthesis.Generators`, checkpoint path).
    """
    config = load_config(run_dir)
    gens = build_generators(config, ema)
    path = restore_generators(run_dir, gens, checkpoint, ema, warn)
    return config, gens, path


def load_restorer(run_dir, checkpoint=None, warn=None):
    """Rebuilds a restoration run's restorer G and restores its weights.

    Args:
      run_dir: a run directory of --variant=unir or cyclegan.
      checkpoint: as in `restore_generators` (None = the newest intact).
      warn: function receiving the warning about a damaged checkpoint.
    Returns:
      (config, restorer keras.Model, checkpoint path).
    Raises:
      UserError: not a restoration run, or no usable checkpoint.
    """
    from bncr_tf import variants
    config = load_config(run_dir)
    if not variants.is_restoration(config.variant):
        raise UserError(f"{run_dir} is a {config.variant} run, not a "
                        f"restoration run (--variant=unir, cyclegan, "
                        f"deblurgan or deblurganv2)")
    g = models.build_restorer(config)
    ckpt = tf.train.Checkpoint(G=models.checkpoint_variables(g))
    if checkpoint in (None, "", "latest"):
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        if checkpoints.read_state(ckpt_dir) is None:
            raise UserError(f"{run_dir} has no checkpoint in {ckpt_dir}")
        path, _ = checkpoints.restore_latest_valid(
            ckpt, ckpt_dir, partial=True, repair=False, warn=warn)
    else:
        path = checkpoint_path(run_dir, checkpoint)
        checkpoints.restore_one(ckpt, path, partial=True)
    return config, g, path
