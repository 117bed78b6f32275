"""Scores a restoration run (--variant=unir) on a held-out test set.

Paper section 7.6 / Table 4: clean test images are degraded by a chosen
setting (the paper: setting N, the most severe), restored by the run's
restorer, and compared with the clean test images by FID (and LPIPS). The
degradation is the dataset builder's (`training.loop.degrade_in_memory`,
the same path as the training data), seeded by --seed.

Images enter the restorer as the restore export feeds them (u8 / 127.5 -
1) and leave it as the export returns them (round((x + 1) 127.5),
clipped), so a run and its export score the same. Each call appends one
record to `<run dir>/metric-restore_<metric><n>.jsonl` holding the score of
the restored images ("value") and, as the baseline, of the degraded inputs
("degraded_value"), and the mean PSNR of both against the clean images
("psnr_db", "degraded_psnr_db"; dB, peak 255).

LPIPS: `lpips_distances` calls `bncr_tf.metrics.lpips.lpips_distance`
(LPIPS v0.1, AlexNet, as in the paper's Table 4; weights from
`tools/install_weights.sh`) on two uint8 batches [N, H, W, 3]; the
reported value is the mean of the N per-image distances.
"""

import importlib
import os

import numpy as np

from bncr_tf import data as data_lib
from bncr_tf import runs
from bncr_tf.degradations import settings as settings_lib
from bncr_tf.errors import UserError
from bncr_tf.metrics import evaluation
from bncr_tf.metrics import features as features_lib
from bncr_tf.metrics import reference as reference_lib

METRICS = ("fid", "kid", "lpips")
LPIPS_MODULE = "bncr_tf.metrics.lpips"
LPIPS_FUNCTION = "lpips_distance"


def held_out_source(config):
    """(spec, seed) of a default held-out clean test set for a run.

    tfds / Fashion-MNIST: the test split. builtin:skimage_patches: patches
    cut with another seed (data_seed + 1000; the same photos, other
    positions: [choice], not a disjoint set). Folders and TFRecord sets have
    no known test split.

    Raises:
      UserError: no default; pass --reference.
    """
    source = data_lib.parse_source(config.data)
    if source.kind == "tfds":
        return f"tfds:{source.name}:test", 0
    if source.kind == "fashion_mnist":
        return "fashion_mnist:test", 0
    if source.kind == "builtin":
        return config.data, config.data_seed + 1000
    raise UserError(f"the run trained on {config.data}, which has no known "
                    f"test split; pass --reference=<clean held-out images>")


def lpips_function():
    """`bncr_tf.metrics.lpips.lpips_distance`.

    Raises:
      UserError: that module is not installed.
    """
    try:
        module = importlib.import_module(LPIPS_MODULE)
    except ImportError:
        raise UserError(f"--metric=lpips needs {LPIPS_MODULE} (function "
                        f"{LPIPS_FUNCTION}(a, b) of two uint8 batches), which "
                        f"this checkout lacks") from None
    return getattr(module, LPIPS_FUNCTION)


def lpips_distances(a, b):
    """Per-image LPIPS of two uint8 batches [N, H, W, 3]."""
    return np.asarray(lpips_function()(a, b), np.float64).reshape(-1)


def restore_uint8(restorer, images, batch_size=50):
    """Restores uint8 [N, H, W, 3] -> uint8, as the restore export does."""
    import tensorflow as tf
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = tf.constant(images[start:start + batch_size], tf.float32)
        x = x / 127.5 - 1.0
        y = tf.clip_by_value(restorer(x, training=False), -1.0, 1.0)
        out[start:start + batch_size] = tf.cast(
            tf.clip_by_value(tf.round((y + 1.0) * 127.5), 0, 255),
            tf.uint8).numpy()
    return out


def evaluate_restoration(run_dir, extractor=None, make_extractor=None,
                         checkpoint="latest", test_spec=None, test_limit=None,
                         test_seed=None, test_setting=None,
                         metrics=("fid",), seed=0, batch_size=50,
                         cache=None, use_cache=True, kid_subsets=100,
                         kid_subset_size=1000, metrics_dir=None,
                         progress=True, log=print, warn=None):
    """Restores a degraded held-out set and scores it against the clean one.

    Args:
      run_dir: a restoration run directory.
      extractor / make_extractor: FID/KID features (built after the
        cheap checks when only make_extractor is given; unused for LPIPS
        alone).
      checkpoint: "latest", a step or a checkpoint path.
      test_spec, test_limit, test_seed: the clean test set (None:
        `held_out_source`, all of it / --num_samples).
      test_setting: degradation of the test images (None: the run's).
      metrics: subset of ("fid", "kid", "lpips").
      seed: seed of the test degradation.
    Returns:
      list of appended records.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise UserError(f"--metric must list {', '.join(METRICS)}; got "
                        f"{', '.join(unknown) or 'nothing'}")
    config, restorer, path = runs.load_restorer(run_dir, (
        None if checkpoint in (None, "", "latest") else checkpoint), warn)
    setting = settings_lib.get_setting(test_setting or config.setting)
    if setting.is_clean:
        raise UserError("the test setting is clean (A); choose a degraded "
                        "one, e.g. --test_setting=N (the paper's)")
    if test_spec:
        spec, spec_seed = test_spec, 0
    else:
        spec, spec_seed = held_out_source(config)
    if test_seed is not None:
        spec_seed = test_seed
    if "lpips" in metrics:
        lpips_function()  # fails before any image is read
    r = config.resolution
    try:
        clean, _ = data_lib.load_clean_uint8(spec, r, limit=test_limit,
                                             seed=spec_seed)
    except data_lib.DataError as e:
        raise UserError(f"test set: {e}") from None
    from bncr_tf.training import loop
    degraded = loop.degrade_in_memory(clean, setting, seed)
    restored = restore_uint8(restorer, degraded, batch_size)
    results = {}
    if "lpips" in metrics:
        results["lpips"] = (float(np.mean(lpips_distances(restored, clean))),
                            float(np.mean(lpips_distances(degraded, clean))))
    feature_metrics = tuple(m for m in metrics if m in ("fid", "kid"))
    if feature_metrics:
        if extractor is None:
            extractor = make_extractor()
        n = len(clean)
        keep = n if "kid" in feature_metrics else 0
        reference = reference_lib.reference_stats(
            spec, r, extractor, limit=test_limit, seed=spec_seed,
            cache=cache, use_cache=use_cache, num_features=keep,
            progress=progress)
        scores = []
        for label, images in (("restored", restored),
                              ("degraded", degraded)):
            stats = features_lib.extract_statistics(
                [images], extractor, total=n, max_features=keep,
                label=label, progress=progress)
            scores.append(evaluation.score(
                stats, reference, feature_metrics,
                kid_subsets, min(kid_subset_size, n)))
        for m in feature_metrics:
            results[m] = (scores[0][m], scores[1][m])
    out_dir = metrics_dir or run_dir
    psnr = (psnr_db(restored, clean), psnr_db(degraded, clean))
    records = []
    for m in metrics:
        name = f"restore_{m}{_count(len(clean))}"
        record = {
            "metric": name, "value": results[m][0],
            "degraded_value": results[m][1], "step": runs.checkpoint_step(
                path), "checkpoint": path, "test_set": spec,
            "test_seed": spec_seed, "test_setting": setting.name,
            "degradation_seed": seed, "num_images": len(clean),
            "psnr_db": psnr[0], "degraded_psnr_db": psnr[1],
            "measurement": _measurement(config)}
        if m != "lpips":
            record["extractor"] = features_lib.extractor_info(extractor)
        file = evaluation.append_metric(out_dir, name, record)
        records.append(record)
        log(f"{name} {record['value']:.6g} (degraded input "
            f"{record['degraded_value']:.6g}; PSNR {psnr[0]:.2f} dB, "
            f"degraded {psnr[1]:.2f} dB)  setting {setting.name}  "
            f"{os.path.basename(path)}  -> {file}")
    return records


def _measurement(config):
    """What the run's F was, for the metric record."""
    if config.variant == "cyclegan":
        return (f"CycleGAN's learned F (set-level supervision on setting "
                f"{config.setting})")
    return config.degradation_from or (
        f"true degradation of {config.ambient_setting or config.setting}")


def psnr_db(a, b):
    """Mean over images of the PSNR (dB, peak 255) of uint8 batches."""
    err = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
    return float(np.mean(10.0 * np.log10(255.0 ** 2 / np.maximum(err,
                                                                 1e-10))))


def _count(n):
    return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)

