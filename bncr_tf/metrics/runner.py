"""Scores a run's checkpoints or an exported generator (`bncr_tf.evaluate`).

`evaluate_run` is what `python -m bncr_tf.evaluate` calls: it resolves the
reference set (by default the run's own training source read clean, i.e.
--setting A semantics), computes or loads its cached statistics, scores
each requested checkpoint's EMA G_x (or the export's `from_seed`), appends
one JSON line per metric to `<run dir>/metric-<name>.jsonl` and returns the
records.
"""

import os
import re

import tensorflow as tf

from bncr_tf import data as data_lib
from bncr_tf import runs
from bncr_tf.errors import UserError
from bncr_tf.metrics import evaluation
from bncr_tf.metrics import reference as reference_lib
from bncr_tf.training import checkpoints as checkpoints_lib


def list_checkpoints(run_dir, checkpoint="latest"):
    """Checkpoint prefixes to score (not yet checked for damage).

    Args:
      run_dir: a run directory.
      checkpoint: "latest", a step number, "all", or a checkpoint path.
    Returns:
      list of checkpoint prefix paths, oldest first for "all"; for
      "latest" the one the state file names (`run_targets` falls back
      from it when it is damaged).
    """
    checkpoint = str(checkpoint or "latest")
    if checkpoint == "latest":
        return [runs.checkpoint_path(run_dir)]
    if checkpoint == "all":
        paths = checkpoints_lib.committed(os.path.join(run_dir,
                                                       "checkpoints"))
        if not paths:
            raise UserError(f"{run_dir} has no checkpoints")
        return sorted(paths, key=lambda p: checkpoint_step(p) or 0)
    return [runs.checkpoint_path(run_dir, checkpoint)]


def run_targets(run_dir, checkpoint="latest", warn=None):
    """The checkpoints of a run to score, checked before anything is
    computed.

    "latest" is the newest checkpoint that reads back intact, falling back
    from damaged ones with the same warning as a resumed training
    (`checkpoints.restore_latest_valid`); a step or a path must read back;
    "all" lists every committed checkpoint (a damaged one is skipped with
    a warning when it is scored).

    Returns:
      list of (step, path, generators or None to load when scored).
    Raises:
      UserError: no checkpoint, the named one missing or damaged, or every
        checkpoint damaged.
    """
    checkpoint = str(checkpoint or "latest")
    if checkpoint == "all":
        return [(checkpoint_step(p), p, None)
                for p in list_checkpoints(run_dir, "all")]
    _, gens, path = runs.load_generators(
        run_dir, None if checkpoint == "latest" else checkpoint, warn=warn)
    return [(checkpoint_step(path), path, gens)]


def checkpoint_step(path):
    """The step of a "ckpt-<step>" prefix (None if it has no number)."""
    match = re.search(r"ckpt-(\d+)$", str(path))
    return int(match.group(1)) if match else None


def find_run_dir(path):
    """The run directory above an export (`<run>/export/<name>/<version>`),
    or None."""
    path = os.path.abspath(path)
    for _ in range(4):
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
        path = os.path.dirname(path)
    return None


def export_resolution(export_dir):
    """Image size R of a generator export's `from_seed` output."""
    model = tf.saved_model.load(export_dir)
    spec = model.signatures["from_seed"].structured_outputs["image_float"]
    return int(spec.shape[1])


def default_reference(config):
    """(spec, limit, seed) of a run's clean training source.

    Raises:
      UserError: the run trained on a degraded TFRecord set, whose clean
        images are not available.
    """
    source = data_lib.parse_source(config.data)
    if source.kind == "tfrecord":
        clean = data_lib.read_degraded_summary(source.path).get("source")
        hint = f" (its summary.json names the source {clean!r})" if clean \
            else ""
        raise UserError(
            f"the run trained on the degraded dataset {source.path}{hint}; "
            f"pass --reference with the clean images to compare against")
    return config.data, config.data_limit or None, config.data_seed


def evaluate_run(extractor, run_dir=None, export_dir=None,
                 checkpoint="latest", reference_spec=None,
                 reference_limit=None, reference_seed=None, resolution=None,
                 num_samples=10000, metrics=("fid",), seed=0, batch_size=50,
                 cache=None, use_cache=True, kid_subsets=100,
                 kid_subset_size=1000, metrics_dir=None, progress=True,
                 log=print, make_extractor=None, warn=None):
    """Scores checkpoints of a run (or an export) and appends metric lines.

    The cheapest inputs are checked first: the run or export directory,
    the checkpoints (restored, so a damaged one is found now), the
    reference spec; only then is the extractor built (`make_extractor`,
    which may look up or download the Inception weights) and the
    reference set read.

    Args:
      extractor: feature extractor (`features.make_extractor`), or None
        with `make_extractor`.
      run_dir: a run directory (or None with export_dir).
      export_dir: a generator SavedModel (version dir or its parent).
      checkpoint: "latest", a step, "all" or a checkpoint path (run_dir).
      reference_spec: reference source spec (None: the run's clean data).
      reference_limit: images of the reference (None: the run's data_limit
        for the default reference, else all).
      reference_seed: seed of builtin sources (None: the run's data_seed).
      resolution: image size R (None: the run's, or the export's).
      num_samples: generated images per evaluation.
      metrics: subset of ("fid", "kid").
      seed: seed of the first generated image.
      batch_size: images per generator / extractor call.
      cache: cache directory (None: $BNCR_CACHE_DIR or ~/.cache/bncr_tf).
      use_cache: read/write cached reference statistics.
      kid_subsets, kid_subset_size: KID protocol.
      metrics_dir: where metric-*.jsonl go (None: the run directory, or
        the export directory when no run is found).
      progress: progress lines on stderr.
      log: function printing one result line.
      make_extractor: function returning the extractor, called once the
        cheaper inputs are valid (when `extractor` is None).
      warn: function receiving the warning about a damaged checkpoint.
    Returns:
      list of the appended records (dicts).
    Raises:
      UserError: bad arguments, missing run/export/checkpoint/data.
    """
    if bool(run_dir) == bool(export_dir):
        raise UserError("pass exactly one of --run_dir and --export_dir")
    config = None
    if export_dir:
        export_dir = evaluation.resolve_export_dir(export_dir)
        run_dir = find_run_dir(export_dir)
        resolution = resolution or export_resolution(export_dir)
    if run_dir:
        config = runs.load_config(run_dir)
        resolution = resolution or config.resolution
    if reference_spec:
        spec, limit, ref_seed = reference_spec, reference_limit, 0
    elif config is not None:
        spec, limit, ref_seed = default_reference(config)
        limit = reference_limit or limit
    else:
        raise UserError("the export is not inside a run directory; pass "
                        "--reference")
    if reference_seed is not None:
        ref_seed = reference_seed
    data_lib.parse_source(spec)
    if export_dir:
        targets = [(None, export_dir, None)]
    else:
        targets = run_targets(run_dir, checkpoint, warn=warn)
    if extractor is None:
        extractor = make_extractor()
    metrics = tuple(metrics)
    num_features = max(num_samples, kid_subset_size) if "kid" in metrics \
        else 0
    reference = reference_lib.reference_stats(
        spec, resolution, extractor, limit=limit, seed=ref_seed, cache=cache,
        use_cache=use_cache, num_features=num_features, progress=progress)
    out_dir = metrics_dir or run_dir or export_dir
    records = []
    for step, path, gens in targets:
        label = f"generated ({os.path.basename(path)})"
        if export_dir:
            chunks = evaluation.exported_images(path, num_samples, seed,
                                                batch_size)
        else:
            if gens is None:
                try:
                    _, gens, _ = runs.load_generators(run_dir, path)
                except UserError as e:
                    (warn or log)(f"{e}; skipped")
                    continue
            chunks = evaluation.generated_images(gens, num_samples, seed,
                                                 batch_size)
        result = evaluation.evaluate_images(
            chunks, reference, extractor, num_samples, metrics, kid_subsets,
            kid_subset_size, progress, label)
        for metric in metrics:
            record = evaluation.metric_record(
                metric, result, num_samples, reference, extractor,
                step=step, checkpoint=path, seed=seed)
            file = evaluation.append_metric(out_dir, record["metric"], record)
            records.append(record)
            extra = f" ± {record['std']:.4g}" if metric == "kid" else ""
            if not record["extractor"]["comparable"]:
                extra += " (not comparable with published numbers)"
            log(f"{record['metric']} {record['value']:.6g}{extra}  step "
                f"{step}  {path}  -> {file}")
    if not records:
        raise UserError(f"no checkpoint of {run_dir} could be scored")
    if len(targets) > 1:
        for metric in metrics:
            name = evaluation.metric_name(metric, num_samples)
            best = min((r for r in records if r["metric"] == name),
                       key=lambda r: r["value"])
            log(f"best {name} {best['value']:.6g} at step {best['step']} "
                f"({best['checkpoint']})")
    return records
