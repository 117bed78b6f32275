"""The training loop: `train(config)` runs or resumes one run directory.

Phases: set up TensorFlow -> choose the run directory -> load and degrade
the data -> build networks, EMA copies and optimisers -> restore the latest
checkpoint -> loop (one D step then one G step per iteration) with a status
line per tick, TensorBoard, stats.jsonl, grids and checkpoints -> export.

Randomness is a pure function of (seed, step): latents, noise and data
order for iteration `s` are drawn from stateless seeds derived from `s`, so
a resumed run continues exactly as an uninterrupted one would.
"""

import json
import logging
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

from bncr_tf.training import grids
from bncr_tf.training import rundir
from bncr_tf.training import stats as stats_lib
from bncr_tf.training.config import UserError

log = logging.getLogger("bncr_tf")


class NonFiniteError(UserError):
    """A loss or gradient became NaN/Inf; training stopped."""


# --- Set-up -----------------------------------------------------------------

def setup_tensorflow(config):
    """Applies determinism and the mixed-precision policy (before models)."""
    import keras
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = ("float32" if config.mixed_precision == "none"
              else config.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)


def make_strategy(kind):
    """Returns the tf.distribute strategy named by --distribute."""
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 else "default"
    if kind == "mirrored":
        # Without GPUs, mirror over the logical CPU devices (tests, CI).
        devices = None if gpus else [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--distribute=multiworker needs TF_CONFIG")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _setup_logging(run_dir):
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout),
                    logging.FileHandler(os.path.join(run_dir, "log.txt"))):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def write_config(run_dir, config):
    """Writes config.json and config.flags (a flagfile that re-creates it)."""
    import dataclasses
    values = dataclasses.asdict(config)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json() + "\n")
    with open(os.path.join(run_dir, "config.flags"), "w") as f:
        for name, value in values.items():
            if name in ("resume", "dry_run"):
                continue
            if isinstance(value, bool):
                f.write(f"--{name}\n" if value else f"--no{name}\n")
            else:
                f.write(f"--{name}={value}\n")


# Fields that may differ when a run is resumed (they do not change the model
# or the sequence of random draws).
_RESUMABLE_CHANGES = {
    "iterations", "resume", "log_every", "grid_every", "checkpoint_every",
    "keep_checkpoints", "export_at_end", "outdir", "dry_run", "jit_compile",
    "distribute", "fid_every", "fid_samples", "fid_reference",
    "fid_extractor", "inception_path",
}


class FidTracker:
    """Scores the EMA G_x every --fid_every iterations; keeps the best.

    The extractor and the reference statistics are built once (the
    statistics are cached on disk, see bncr_tf.metrics.reference).
    """

    def __init__(self, config, run_dir, checkpoint):
        from bncr_tf.metrics import evaluation
        from bncr_tf.metrics import features
        from bncr_tf.metrics import reference
        from bncr_tf.metrics import runner
        self.config, self.run_dir = config, run_dir
        self.extractor = features.make_extractor(
            config.fid_extractor, inception_path=config.inception_path or None,
            seed=config.seed)
        if config.fid_reference:
            spec, limit, seed = config.fid_reference, None, 0
        else:
            spec, limit, seed = runner.default_reference(config)
        self.reference = reference.reference_stats(
            spec, config.resolution, self.extractor, limit=limit, seed=seed)
        self.name = evaluation.metric_name("fid", config.fid_samples)
        self.best = min(self._previous(), default=math.inf)
        self.manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(run_dir, "checkpoints", "best"),
            max_to_keep=1, checkpoint_name="best")

    def _previous(self):
        path = os.path.join(self.run_dir, f"metric-{self.name}.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line)["value"] for line in f if line.strip()]

    def __call__(self, trainer, step):
        from bncr_tf.metrics import evaluation
        c = self.config
        result = evaluation.evaluate_generators(
            trainer.gens_ema, self.reference, c.fid_samples, self.extractor,
            seed=c.seed, z_dim=c.z_dim, progress=False)
        evaluation.append_metric(self.run_dir, self.name,
                                 evaluation.metric_record(
                                     "fid", result, c.fid_samples,
                                     self.reference, self.extractor,
                                     step=step))
        value = result["fid"]
        if value < self.best:
            self.best = value
            self.manager.save(checkpoint_number=step)
        return value


def check_resume_config(run_dir, config):
    """Refuses to resume a run with a config that changes the model."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        stored = json.load(f)
    current = json.loads(config.to_json())
    changed = sorted(k for k in current
                     if k not in _RESUMABLE_CHANGES
                     and stored.get(k) != current[k])
    if changed:
        raise UserError(
            f"cannot resume {run_dir}: these settings differ from the stored "
            f"config: {', '.join(changed)} (use --resume=none for a new run)")


# --- Data -------------------------------------------------------------------

def load_training_images(config):
    """Loads the clean source and applies --setting. uint8 [N, R, R, 3]."""
    from bncr_tf import data
    from bncr_tf.degradations import settings
    try:
        images, _ = data.load_clean_uint8(
            config.data, config.resolution, limit=config.data_limit or None,
            seed=config.data_seed)
    except data.DataError as e:
        raise UserError(str(e)) from None
    if len(images) < config.d_batch:
        raise UserError(
            f"{config.data} has {len(images)} images, fewer than one D batch "
            f"({config.d_batch})")
    setting = settings.get_setting(config.setting)
    if not setting.is_clean:
        images = degrade_in_memory(images, setting, config.data_seed)
    return images


def degrade_in_memory(images, setting, seed, chunk=256):
    """Applies a setting to uint8 images exactly as the dataset builder does.

    Results depend only on (seed, setting, image index): see
    `bncr_tf.degradations.builder.degrade_chunk`.
    """
    from bncr_tf.degradations import builder
    n = len(images)
    out = np.empty_like(images)
    started = time.time()
    for start in range(0, n, chunk):
        out[start:start + chunk], _ = builder.degrade_chunk(
            setting, images[start:start + chunk], start, n, seed)
    log.info("degraded %d images by setting %s in %.1f s", n, setting.name,
             time.time() - started)
    return out


def make_real_batches(images, batch, seed, start_step):
    """Yields reals for steps start_step, start_step + 1, ...

    The data order is an epoch-wise permutation seeded by (seed, epoch), and
    dequantisation noise is seeded by (seed, step), so the batch of a step
    never depends on where the run was resumed.

    Returns:
      A tf.data.Dataset of float32 [batch, R, R, 3] in [-1, 1).
    """
    from bncr_tf import data
    n = len(images)
    per_epoch = n // batch
    cache = {}

    def gather(step):
        epoch, pos = divmod(int(step), per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        idx = np.sort(cache[epoch][pos * batch:(pos + 1) * batch])
        return images[idx]

    def load(step):
        u8 = tf.numpy_function(gather, [step], tf.uint8, stateful=False)
        u8.set_shape((batch,) + images.shape[1:])
        return data.dequantize(u8, tf.stack([tf.cast(seed, tf.int64), step]))

    ds = tf.data.Dataset.range(start_step, 2 ** 62)
    return ds.map(load, num_parallel_calls=1).prefetch(2)


# --- Loop -------------------------------------------------------------------

def _status_line(step, total, stats, it_per_s, images_seen):
    remaining = (total - step) / max(it_per_s, 1e-9)
    h, rem = divmod(int(remaining), 3600)
    keys = ("Loss/D/loss", "Loss/G/adv", "Loss/D/r1", "Degradation/q_mean",
            "Degradation/kernel_entropy", "Degradation/noise_std")
    parts = [f"{k.split('/', 1)[1]} {stats[k]:.4g}" for k in keys
             if k in stats]
    return (f"step {step}/{total}  {it_per_s:.3g} it/s  "
            f"kimg {images_seen / 1000:.1f}  ETA {h}h{rem // 60:02d}m  "
            + "  ".join(parts))


def _check_finite(values, step, manager):
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        last = manager.latest_checkpoint or "none written yet"
        raise NonFiniteError(
            f"non-finite values at step {step}: {', '.join(bad)}; training "
            f"stopped without saving; last good checkpoint: {last}")


def train(config):
    """Runs (or resumes) training as described by `config`.

    Returns:
      The run directory path.
    Raises:
      UserError: bad configuration or data, or NonFiniteError on NaN/Inf.
    """
    from bncr_tf.training import steps as steps_lib

    setup_tensorflow(config)
    strategy = make_strategy(config.distribute)
    replicas = strategy.num_replicas_in_sync
    for name, multiple in (("d_batch", replicas), ("g_batch", 2 * replicas)):
        if getattr(config, name) % multiple:
            raise UserError(
                f"--{name}={getattr(config, name)} is not divisible by "
                f"{multiple} ({replicas} replicas"
                + (", two halves each)" if name == "g_batch" else ")"))

    run_dir, resuming = rundir.resolve_run_dir(
        config.outdir, config.default_run_name(), config.resume)
    _setup_logging(run_dir)
    if resuming:
        check_resume_config(run_dir, config)
    write_config(run_dir, config)
    log.info("run directory %s (%s)", run_dir,
             "resuming" if resuming else "new run")

    images = load_training_images(config)
    log.info("training images: %d x %s from %s, setting %s", len(images),
             images.shape[1:], config.data, config.setting)

    with strategy.scope():
        trainer = steps_lib.Trainer(config, strategy)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    manager = tf.train.CheckpointManager(
        trainer.checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
    if resuming:
        restored = trainer.restore(manager)
        log.info("restored %s at step %d", restored, trainer.step_value())
    start = trainer.step_value()

    grid_dir = os.path.join(run_dir, "grids")
    os.makedirs(grid_dir, exist_ok=True)
    if start == 0:
        reals = grids.to_uint8(
            np.asarray(images[:config.grid_size ** 2], np.float32)
            / 127.5 - 1.0)
        grids.write_png(os.path.join(grid_dir, "reals.png"),
                        grids.tile(reals, config.grid_size))

    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tb"))
    jsonl = stats_lib.JsonlWriter(os.path.join(run_dir, "stats.jsonl"))
    collector = stats_lib.StatsCollector()
    batches = iter(strategy.experimental_distribute_dataset(
        make_real_batches(images, config.d_batch, config.seed, start)))

    fid = FidTracker(config, run_dir, trainer.checkpoint) if (
        config.fid_every) else None
    log.info("training %s from step %d to %d", config.variant, start,
             config.iterations)
    tick_start, tick_step = time.time(), start
    step = start
    try:
        for step in range(start, config.iterations):
            values = trainer.train_iteration(next(batches), step)
            values = {k: float(v) for k, v in values.items()}
            _check_finite(values, step, manager)
            collector.report_dict(values)
            done = step + 1
            if done % config.log_every == 0 or done == config.iterations:
                elapsed = time.time() - tick_start
                it_per_s = (done - tick_step) / max(elapsed, 1e-9)
                tick_stats = collector.flush()
                tick_stats["Timing/sec_per_iter"] = 1.0 / max(it_per_s, 1e-9)
                tick_stats.update(trainer.degradation_stats(step))
                images_seen = done * config.d_batch
                log.info(_status_line(done, config.iterations, tick_stats,
                                      it_per_s, images_seen))
                with writer.as_default(step=done):
                    for name, value in tick_stats.items():
                        tf.summary.scalar(name, value)
                    for name, hist in trainer.histograms(step).items():
                        tf.summary.histogram(name, hist)
                jsonl.write(dict(tick_stats, step=done, kimg=images_seen / 1e3,
                                 time=time.time()))
                tick_start, tick_step = time.time(), done
            if done % config.grid_every == 0 or done == config.iterations:
                grid = trainer.grid(config.grid_size)
                grids.write_png(
                    os.path.join(grid_dir, f"fakes-{done:07d}.png"), grid)
                with writer.as_default(step=done):
                    tf.summary.image("fakes", grid[None])
            if (done % config.checkpoint_every == 0
                    or done == config.iterations):
                path = manager.save(checkpoint_number=done)
                log.info("checkpoint %s", path)
            if fid and (done % config.fid_every == 0
                        or done == config.iterations):
                value = fid(trainer, done)
                log.info("%s %.4g at step %d (best %.4g)", fid.name, value,
                         done, fid.best)
                with writer.as_default(step=done):
                    tf.summary.scalar(f"Metrics/{fid.name}", value)
    finally:
        writer.flush()
        jsonl.close()

    if config.export_at_end:
        from bncr_tf import export
        paths = export.export_run(trainer, os.path.join(run_dir, "export"))
        for path in paths:
            log.info("exported %s", path)
    log.info("done: %s", run_dir)
    return run_dir
