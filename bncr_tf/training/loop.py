"""The training loop: `train(config)` runs or resumes one run directory.

Phases: set up TensorFlow -> choose the run directory -> load and degrade
the data -> build networks, EMA copies and optimisers -> restore the latest
checkpoint -> loop (one D step then one G step per iteration) with a status
line per tick, TensorBoard, stats.jsonl, grids and checkpoints -> export.

Randomness is a pure function of (seed, step): latents, noise and data
order for iteration `s` are drawn from stateless seeds derived from `s`, so
a resumed run continues exactly as an uninterrupted one would.

Faults (docs/reliability.md): a resume restores the newest checkpoint that
reads back intact and falls back to older ones with a warning; a failed
checkpoint write is retried at the next interval and stops the run after
`MAX_CHECKPOINT_FAILURES` in a row (or at the last step); failed writes of
grids, stats.jsonl and log.txt only warn; NaN/Inf stops the run without
saving, except a float16 gradient overflow the loss scaler skipped.
"""

import json
import logging
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from bncr_tf import interrupts
from bncr_tf import quiet
from bncr_tf.config import TrainConfig
from bncr_tf.errors import UserError
from bncr_tf.training import checkpoints
from bncr_tf.training import events
from bncr_tf.training import grids
from bncr_tf.training import rundir
from bncr_tf.training import stats as stats_lib

log = logging.getLogger("bncr_tf")


# Consecutive failed checkpoint writes after which training stops.
MAX_CHECKPOINT_FAILURES = 3
# Below this loss scale a float16 gradient overflow is a fault, not a step
# for the loss scaler to skip (the gradients overflow even unscaled).
MIN_LOSS_SCALE = 1.0


class NonFiniteError(UserError):
    """A loss or gradient became NaN/Inf; training stopped."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped training; the message is one line naming
    the step and the last checkpoint, `exit_code` is 130 or 143."""

    def __init__(self, step, checkpoint, signum):
        last = os.path.basename(checkpoint) if checkpoint else "none"
        super().__init__(
            f"interrupted at step {step}; last checkpoint {last}; run the "
            f"same command to continue")
        self.step, self.checkpoint = step, checkpoint
        self.exit_code = interrupts.exit_code(
            interrupts.Interrupted(signum))


class _Progress:
    """Where training is, for the interrupt message."""

    step = 0
    checkpoint = None
    in_loop = False
    trainer = None
    manager = None

    def where(self):
        """(completed steps, last committed checkpoint or None), read from
        the trainer's step counter and the checkpoint manager once they
        exist (a signal can arrive between any two lines)."""
        step, checkpoint = self.step, self.checkpoint
        try:
            if self.trainer is not None:
                step = self.trainer.step_value()
            if self.manager is not None:
                checkpoint = self.manager.latest_checkpoint or checkpoint
        except Exception:  # noqa: BLE001 - fall back to what was recorded
            pass
        return step, checkpoint


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
    """Returns the tf.distribute strategy named by --distribute.

    Call it before any TensorFlow op runs: multi-worker collectives must be
    configured at start-up (listing physical devices is safe; listing
    logical ones initialises the runtime).
    """
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--distribute=multiworker needs TF_CONFIG")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 else "default"
    if kind == "mirrored":
        # Without GPUs, mirror over the logical CPU devices (tests, CI).
        devices = None if gpus else [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


class _LogFile(logging.FileHandler):
    """log.txt; a failed write (e.g. disk full) is reported once, as one
    line on stderr, instead of a traceback per record."""

    failed = False

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(
                f"warning: cannot write {self.baseFilename}: "
                f"{getattr(error, 'strerror', None) or error}; the log "
                f"continues on stdout\n")


def _setup_logging(run_dir):
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout),
                    _LogFile(os.path.join(run_dir, "log.txt"))):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def write_config(run_dir, config):
    """Writes config.json and config.flags (a flagfile that re-creates it).

    Both are replaced atomically: a kill while writing leaves the previous
    file.

    Raises:
      UserError: a file cannot be written (e.g. no space left).
    """
    import dataclasses
    lines = []
    for name, value in dataclasses.asdict(config).items():
        if name in ("resume", "dry_run"):
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        else:
            lines.append(f"--{name}={value}")
    for name, text in (("config.json", config.to_json() + "\n"),
                       ("config.flags", "\n".join(lines) + "\n")):
        path = os.path.join(run_dir, name)
        try:
            rundir.atomic_write_text(path, text)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") \
                from None


# Fields that may differ when a run is resumed (they do not change the model
# or the sequence of random draws).
_RESUMABLE_CHANGES = {
    "iterations", "resume", "log_every", "grid_every", "checkpoint_every",
    "keep_checkpoints", "export_at_end", "outdir", "dry_run", "jit_compile",
    "distribute", "fid_every", "fid_samples", "fid_reference",
    "fid_extractor", "inception_path", "classifier_path", "init_from",
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
            seed=config.seed,
            classifier_path=config.classifier_path or None)
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
            try:
                checkpoints.save(self.manager, step, name="best")
                self.best = value
            except checkpoints.CheckpointWriteError as e:
                log.warning("%s; the previous best checkpoint is kept", e)
        return value


def check_resume_config(run_dir, config):
    """Refuses to resume a run with a config that changes the model."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        stored = TrainConfig.complete(stored)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot resume {run_dir}: its config.json is unreadable "
            f"({e}); restore it from config.flags or use --resume=none") \
            from None
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
    """Loads the clean source and applies --setting. uint8 [N, R, R, 3].

    Paired restorers (deblurgan, deblurganv2) get the sharp images as they
    are (their pairs are blurred on the fly, `bncr_tf.training.paired`),
    and a folder is cut into --data_limit (default 2048) R x R crops at
    the images' own scale (`data.load_folder_crops`).
    """
    from bncr_tf import data
    from bncr_tf import variants
    from bncr_tf.degradations import settings
    paired = variants.is_paired(config.variant)
    # libjpeg / libpng print their complaints about bad files straight
    # to stderr; the folder scan reports them in one summary instead.
    with quiet.native_stderr(native=True):
        if paired and data.parse_source(config.data).kind == "folder":
            images = data.load_folder_crops(
                data.parse_source(config.data).path, config.resolution,
                count=config.data_limit or data.DEFAULT_CROP_COUNT,
                seed=config.data_seed)
        else:
            images, _ = data.load_clean_uint8(
                config.data, config.resolution,
                limit=config.data_limit or None, seed=config.data_seed)
    if len(images) < config.d_batch:
        raise UserError(
            f"{config.data} has {len(images)} images, fewer than one D batch "
            f"({config.d_batch})")
    setting = settings.get_setting(config.setting)
    if not setting.is_clean and not paired:
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


class FiniteGuard:
    """Stops training on NaN/Inf in the losses or gradient norms.

    With mixed_float16 the optimisers are LossScaleOptimizers: a float16
    gradient overflow makes the gradient norm Inf/NaN, but the optimiser
    skips that update and halves its loss scale. Such a step is not a
    fault: the non-finite gradient norm is dropped from the stats, the
    step is reported as `LossScale/<net>_skipped` and training goes on. It
    is a fault when a loss itself is non-finite, or when the scale falls
    below `MIN_LOSS_SCALE` (the gradients overflow even unscaled).
    """

    def __init__(self, trainer):
        import keras
        self.scalers = {}
        for net, name in (("D", "opt_d"), ("G", "opt_g")):
            opt = getattr(trainer, name, None)
            if isinstance(opt, keras.optimizers.LossScaleOptimizer):
                self.scalers[net] = opt
        self._before = {}

    def _scales(self):
        return {net: float(opt.dynamic_scale.numpy())
                for net, opt in self.scalers.items()}

    def before_step(self):
        """Records the loss scales (call before each iteration)."""
        if self.scalers:
            self._before = self._scales()

    def check(self, values, step, last_checkpoint):
        """Checks one iteration's scalars.

        Args:
          values: {name: float} returned by the iteration.
          step: the iteration number (for the message).
          last_checkpoint: the last good checkpoint path, or None.
        Returns:
          The values to report: without the gradient norms of skipped
          float16 steps, plus LossScale/<net> and LossScale/<net>_skipped
          when loss scaling is on.
        Raises:
          NonFiniteError: naming the values, the step and the checkpoint.
        """
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if not self.scalers:
            if bad:
                raise NonFiniteError(self._message(bad, step,
                                                   last_checkpoint))
            return values
        out = dict(values)
        after = self._scales()
        hints = []
        for net, scale in after.items():
            key = f"Loss/{net}/grad_norm"
            skipped = scale < self._before.get(net, scale)
            out[f"LossScale/{net}"] = scale
            out[f"LossScale/{net}_skipped"] = float(skipped)
            if key in bad and skipped:
                if scale >= MIN_LOSS_SCALE:
                    bad.remove(key)
                    del out[key]
                else:
                    hints.append(f"float16 gradients of {net} overflow "
                                 f"even at loss scale {scale:g}")
        if bad:
            raise NonFiniteError(self._message(bad, step, last_checkpoint,
                                               hints))
        return out

    @staticmethod
    def _message(bad, step, last_checkpoint, hints=()):
        extra = f" ({'; '.join(hints)})" if hints else ""
        last = last_checkpoint or "none written yet"
        return (f"non-finite values at step {step}: {', '.join(bad)}{extra};"
                f" training stopped without saving; last good checkpoint: "
                f"{last}")


def _warn_write(what, path, error):
    log.warning("could not write %s %s: %s; training continues", what, path,
                getattr(error, "strerror", None) or error)


def _save_checkpoint(manager, done, config, failures):
    """Saves the checkpoint of step `done`; returns the failure count.

    A failed write keeps the previous checkpoint committed and is retried
    at the next interval; after MAX_CHECKPOINT_FAILURES failures in a row,
    or when the last step cannot be saved, training stops (UserError).
    """
    try:
        with interrupts.deferred():  # a signal waits for the commit
            path = checkpoints.save(manager, done)
    except checkpoints.CheckpointWriteError as e:
        failures += 1
        last = (checkpoints.committed(manager.directory) or
                ["none (no checkpoint was written yet)"])[0]
        if done == config.iterations or failures >= MAX_CHECKPOINT_FAILURES:
            why = ("the last step's checkpoint" if done == config.iterations
                   else f"{failures} checkpoints in a row")
            raise UserError(
                f"training stopped at step {done}: {why} could not be "
                f"written ({e}); the last valid checkpoint is {last}; free "
                f"space and run the same command to continue from it") \
                from None
        log.warning("%s; the last valid checkpoint is still %s; training "
                    "continues and retries at the next interval", e, last)
        return failures
    log.info("checkpoint %s", path)
    return 0


def _drop_recomputed_records(run_dir, stats_path, tb_dir, start):
    """Drops what a resumed run recomputes from stats.jsonl, metric-*.jsonl
    and the TensorBoard event files (the records after step `start`)."""
    paths = [stats_path] + sorted(
        os.path.join(run_dir, p) for p in os.listdir(run_dir)
        if p.startswith("metric-") and p.endswith(".jsonl"))
    for path in paths:
        dropped = rundir.truncate_jsonl(path, start)
        if dropped:
            log.info("%s: dropped %d record(s) after step %d (recomputed "
                     "from the checkpoint)", os.path.basename(path), dropped,
                     start)
    if os.path.isdir(tb_dir):
        try:
            dropped = events.truncate_events(tb_dir, start)
        except (OSError, tf.errors.OpError) as e:
            _warn_write("TensorBoard events in", tb_dir, e)
            return
        if dropped:
            log.info("tb/: dropped %d event(s) after step %d (recomputed "
                     "from the checkpoint)", dropped, start)


def _close_logging():
    """Detaches the run's log handlers (log.txt, stdout) from `log`."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.propagate = True


def train(config, force_export=False):
    """Runs (or resumes) training as described by `config`.

    Args:
      config: the run's `TrainConfig`.
      force_export: export at the end even when the run had nothing left to
        train and its final step is exported already (by default such a
        rerun exports nothing).
    Returns:
      The run directory path.
    Raises:
      UserError: bad configuration or data, or NonFiniteError on NaN/Inf.
      TrainingInterrupted: Ctrl-C (KeyboardInterrupt) or, with
        `interrupts.install()`, SIGTERM.
    """
    progress = _Progress()
    try:
        return _train(config, force_export, progress)
    except KeyboardInterrupt as e:
        step, checkpoint = progress.where()
        raise TrainingInterrupted(
            step, checkpoint, getattr(e, "signum", signal.SIGINT)) from None
    finally:
        _close_logging()


def _check_cheap_inputs(config):
    """Checks what needs no TensorFlow and no data before anything else:
    the data source spec and an explicit --resume directory."""
    from bncr_tf import data
    data.parse_source(config.data)
    rundir.check_resume_arg(config.resume)
    if config.init_from and not os.path.isdir(
            os.path.join(config.init_from, "checkpoints")):
        raise UserError(f"--init_from={config.init_from} is not a run "
                        f"directory with checkpoints")


def _train(config, force_export, progress):
    """`train` without the logging clean-up."""
    # A wrong --data or --resume fails before a run directory is created.
    _check_cheap_inputs(config)
    setup_tensorflow(config)
    # The strategy comes before any op runs (multi-worker collectives must be
    # configured at start-up); the step modules create constants on import.
    strategy = make_strategy(config.distribute)
    from bncr_tf.training import steps  # noqa: F401 - see above
    replicas = strategy.num_replicas_in_sync
    for name, multiple in (("d_batch", replicas), ("g_batch", 2 * replicas)):
        if getattr(config, name) % multiple:
            raise UserError(
                f"--{name}={getattr(config, name)} is not divisible by "
                f"{multiple} ({replicas} replicas"
                + (", two halves each)" if name == "g_batch" else ")"))

    run_dir, resuming = rundir.resolve_run_dir(
        config.outdir, config.default_run_name(), config.resume)
    try:
        return _train_in(config, force_export, progress, strategy, run_dir,
                         resuming)
    except BaseException:
        # A new run that fails or is interrupted during start-up (data,
        # networks, restore) leaves no run directory behind.
        if not resuming and not progress.in_loop:
            _close_logging()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _initialise_from(trainer, source_run):
    """Copies G_x (raw and EMA) and D from `source_run`'s newest valid
    checkpoint into a new run's `trainer` (--init_from)."""
    path, _ = checkpoints.restore_latest_valid(
        trainer.image_model_checkpoint(),
        os.path.join(source_run, "checkpoints"), partial=True, repair=False)
    log.info("initialised G_x, G_x_ema and D from %s", path)


def make_trainer(config, strategy, images):
    """The trainer of the config's model: `steps.Trainer` for the GAN
    variants, `restoration.RestorationTrainer` for restoration models
    (--variant=unir), `cyclegan.CycleGANTrainer` for --variant=cyclegan,
    `paired.PairedTrainer` for --variant=deblurgan and deblurganv2.
    Call inside `strategy.scope()`."""
    from bncr_tf import variants
    if config.variant == "cyclegan":
        from bncr_tf.training import cyclegan
        return cyclegan.CycleGANTrainer(config, strategy, images)
    if variants.is_paired(config.variant):
        from bncr_tf.training import paired
        return paired.PairedTrainer(config, strategy, images)
    if variants.is_restoration(config.variant):
        from bncr_tf.training import restoration
        return restoration.RestorationTrainer(config, strategy, images)
    from bncr_tf.training import steps as steps_lib
    return steps_lib.Trainer(config, strategy)


def _train_in(config, force_export, progress, strategy, run_dir, resuming):
    """`_train` once the run directory is chosen."""
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
        trainer = make_trainer(config, strategy, images)
    progress.trainer = trainer
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if resuming:
        for path in (checkpoints.remove_stale_temp(ckpt_dir)
                     + rundir.remove_temporary_files(run_dir)):
            log.info("removed %s (left by an interrupted save)", path)
        restored, _ = checkpoints.restore_latest_valid(trainer.checkpoint,
                                                       ckpt_dir)
        log.info("restored %s at step %d", restored, trainer.step_value())
        progress.checkpoint = restored
    elif config.init_from:
        _initialise_from(trainer, config.init_from)
    # Created after the restore: it reads the (possibly repaired) state.
    manager = tf.train.CheckpointManager(
        trainer.checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
    progress.manager = manager
    start = trainer.step_value()
    progress.step = start
    stats_path = os.path.join(run_dir, "stats.jsonl")
    tb_dir = os.path.join(run_dir, "tb")
    if resuming:
        _drop_recomputed_records(run_dir, stats_path, tb_dir, start)

    grid_dir = os.path.join(run_dir, "grids")
    os.makedirs(grid_dir, exist_ok=True)
    if start == 0:
        reals = grids.to_uint8(
            np.asarray(images[:config.grid_size ** 2], np.float32)
            / 127.5 - 1.0)
        reals = grids.tile(reals, config.grid_size)
        path = os.path.join(grid_dir, "reals.png")
        try:
            grids.write_png(path, reals)
        except OSError as e:
            _warn_write("grid", path, e)

    writer = tf.summary.create_file_writer(tb_dir)
    if start == 0:
        with writer.as_default(step=0):
            tf.summary.image("reals", reals[None])
    jsonl = stats_lib.JsonlWriter(stats_path)
    collector = stats_lib.StatsCollector()
    # A trainer with its own batches (CycleGAN's two sets) provides them.
    own_batches = getattr(trainer, "real_batches", None)
    batches = iter(strategy.experimental_distribute_dataset(
        own_batches(start) if own_batches else
        make_real_batches(images, config.d_batch, config.seed, start)))

    fid = FidTracker(config, run_dir, trainer.checkpoint) if (
        config.fid_every) else None
    log.info("training %s from step %d to %d", config.variant, start,
             config.iterations)
    guard = FiniteGuard(trainer)
    failures = 0
    tick_start, tick_step = time.time(), start
    step = start
    progress.in_loop = True
    if start < config.iterations:
        # Tracing the D and G steps takes a while before the first status
        # line (about 20 s for the demo on 2 CPU cores).
        log.info("compiling the training step\u2026")
    try:
        for step in range(start, config.iterations):
            guard.before_step()
            # A signal waits for the batch and the step: raised inside the
            # distributed iterator's fetch it could corrupt TensorFlow's
            # heap at exit (docs/reliability.md).
            with interrupts.deferred():
                values = trainer.train_iteration(next(batches), step)
            values = {k: float(v) for k, v in values.items()}
            values = guard.check(values, step, manager.latest_checkpoint)
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
                try:
                    jsonl.write(dict(tick_stats, step=done,
                                     kimg=images_seen / 1e3, time=time.time()))
                except OSError as e:
                    _warn_write("stats", stats_path, e)
                tick_start, tick_step = time.time(), done
            if done % config.grid_every == 0 or done == config.iterations:
                grid = trainer.grid(config.grid_size)
                path = os.path.join(grid_dir, f"fakes-{done:07d}.png")
                try:
                    grids.write_png(path, grid)
                except OSError as e:
                    _warn_write("grid", path, e)
                with writer.as_default(step=done):
                    tf.summary.image("fakes", grid[None])
            if (done % config.checkpoint_every == 0
                    or done == config.iterations):
                failures = _save_checkpoint(manager, done, config, failures)
            if fid and (done % config.fid_every == 0
                        or done == config.iterations):
                value = fid(trainer, done)
                log.info("%s %.4g at step %d (best %.4g)", fid.name, value,
                         done, fid.best)
                with writer.as_default(step=done):
                    tf.summary.scalar(f"Metrics/{fid.name}", value)
    finally:
        for what, close in (("TensorBoard events in", writer.flush),
                            ("stats", jsonl.close)):
            try:
                close()
            except (OSError, tf.errors.OpError) as e:
                _warn_write(what, run_dir, e)

    export_root = os.path.join(run_dir, "export")
    if config.export_at_end:
        from bncr_tf import export
        final = trainer.step_value()
        done_before = export.exported_versions(
            export_root, final, export.run_models(trainer))
        if start == final and done_before and not force_export:
            log.info("nothing to train: step %d is exported already (%s); "
                     "pass --export_at_end to export it again", final,
                     ", ".join(done_before))
            log.info("done: %s", run_dir)
            return run_dir
        try:
            with interrupts.deferred():  # a signal waits for the rename
                paths = export.export_run(trainer, export_root)
        except UserError as e:
            raise UserError(
                f"training finished and {manager.latest_checkpoint} is "
                f"saved, but the export failed: {e}; export it later with "
                f"python tools/export_savedmodel.py --run_dir={run_dir}") \
                from None
        for path in paths:
            log.info("exported %s", path)
    log.info("done: %s", run_dir)
    return run_dir
