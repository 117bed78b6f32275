"""Reading a run directory back: its config and its EMA generators.

Used by evaluation, export and the reports, so none of them depends on the
trainer's internals: a run directory's config.json rebuilds every network
and its checkpoints restore the weights.
"""

import json
import os

import tensorflow as tf

from bncr_tf import models
from bncr_tf.training.config import TrainConfig
from bncr_tf.training.config import UserError


def load_config(run_dir):
    """Returns the `TrainConfig` stored in `<run_dir>/config.json`."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    with open(path) as f:
        return TrainConfig.from_dict(json.load(f))


def checkpoint_path(run_dir, checkpoint=None):
    """Resolves a checkpoint: None = latest of the run, or a step number,
    or a checkpoint prefix path."""
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


def load_generators(run_dir, checkpoint=None, ema=True):
    """Rebuilds a run's generators and restores their weights.

    Args:
      run_dir: a run directory written by `bncr_tf.train`.
      checkpoint: None (latest), a step number, or a checkpoint path.
      ema: restore the EMA weights (what samples, FID and export use);
        False restores the raw training weights.
    Returns:
      (config, `synthesis.Generators`, checkpoint path).
    """
    config = load_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    gens = models.build_generators(config, "_ema" if ema else "")
    suffix = "_ema" if ema else ""
    ckpt = tf.train.Checkpoint(**{
        name + suffix: models.checkpoint_variables(model)
        for name, model in gens.models().items()})
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    return config, gens, path
