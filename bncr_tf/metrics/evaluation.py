"""FID / KID of generators: sampling, scoring and metric-*.jsonl records.

Images come from the one synthesis function (`synthesis.synthesize`) with
the degradation stages switched off, so they are exactly G_x(z_x): image i
uses the latents `synthesis.latents_from_seeds([seed + i])`, the same as the
exported generator's `from_seed` signature, so a checkpoint and its export
give identical scores. Generated images are quantised as the training data
was de-quantised (`data.dequantize`): u8 = clip(floor((x + 1) * 128), 0,
255), i.e. the exact inverse for every training pixel.

Metric names encode the sample count (stylegan2-ada convention): fid10k is
FID with 10 000 generated images, kid50k KID with 50 000; results go to
`<run dir>/metric-<name>.jsonl`, one JSON object per line.

Use from a training loop (what `--fid_every` should do):

    extractor = features.make_extractor("inception", inception_path=...)
    reference = reference.reference_stats(config.data, config.resolution,
                                          extractor, config.data_limit or None,
                                          config.data_seed)
    ...every fid_every steps:
    result = evaluation.evaluate_generators(trainer.gens_ema, reference,
                                            10000, extractor, seed=0)
    evaluation.append_metric(run_dir, evaluation.metric_name("fid", 10000),
                             evaluation.metric_record("fid", result, ...))
"""

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from bncr_tf import stages as stages_lib
from bncr_tf import synthesis
from bncr_tf.metrics import features as features_lib
from bncr_tf.metrics import fid as fid_lib

METRICS = ("fid", "kid")
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def metric_name(metric, num_samples):
    """"fid10k" for 10 000 samples, "fid2500" otherwise."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    if num_samples % 1000 == 0:
        return f"{metric}{num_samples // 1000}k"
    return f"{metric}{num_samples}"


def to_uint8(x):
    """float [-1, 1] -> uint8 [0, 255] as floor((x + 1) * 128), clipped."""
    u = np.floor((np.asarray(x, np.float32) + 1.0) * 128.0)
    return np.clip(u, 0, 255).astype(np.uint8)


def clean_generators(gens):
    """A view of `gens` with every degradation stage off (y = x = G_x)."""
    return dataclasses.replace(gens, variant=stages_lib.only(gens.variant,
                                                             ()))


def generated_images(gens, num_samples, seed=0, batch_size=100, z_dim=None):
    """Yields G_x images of seeds seed, seed + 1, ... in chunks.

    Args:
      gens: a `synthesis.Generators` (use the EMA copies).
      num_samples: number of images.
      seed: integer seed of the first image.
      batch_size: images per generator call.
      z_dim: latent size (None: `gens.G_x.z_dim`).
    Returns:
      A generator of uint8 [n, R, R, 3] arrays in [0, 255].
    """
    z_dim = int(z_dim or gens.G_x.z_dim)
    view = clean_generators(gens)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def sample(seeds):
        latents = synthesis.latents_from_seeds(seeds, z_dim)
        out = synthesis.synthesize(view, latents, tf.zeros([2], tf.int64))
        return out.x

    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        seeds = np.arange(seed + start, seed + stop, dtype=np.int64)
        yield to_uint8(sample(tf.constant(seeds)).numpy())


def run_images(run_dir, checkpoint="latest", num_samples=1024, seed=0,
               batch_size=100):
    """A run's EMA G_x images (degradation stages off), image i from seed
    seed + i, as `generated_images`.

    Args:
      run_dir: a training run directory.
      checkpoint: "latest" (or "" / None), a step number or a path.
    Returns:
      (config, checkpoint path, uint8 [num_samples, R, R, 3]).
    """
    from bncr_tf import cli
    from bncr_tf import runs
    config, gens, path = runs.load_generators(
        run_dir, None if checkpoint in (None, "", "latest") else checkpoint,
        warn=cli.warning)
    images = np.concatenate(list(generated_images(
        gens, num_samples, seed=seed, batch_size=batch_size)))
    return config, path, images


def exported_images(export_dir, num_samples, seed=0, batch_size=100):
    """Yields images of an exported generator SavedModel (`from_seed`).

    Args:
      export_dir: a version directory `<export>/generator/<version>/`, or
        `<export>/generator/` (the highest version is used).
      num_samples, seed, batch_size: as `generated_images`.
    Returns:
      A generator of uint8 [n, R, R, 3] arrays.
    """
    model = tf.saved_model.load(resolve_export_dir(export_dir))
    fn = model.signatures["from_seed"]
    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        seeds = np.arange(seed + start, seed + stop, dtype=np.int64)
        out = fn(seed=tf.constant(seeds))
        yield to_uint8(out["image_float"].numpy())


def resolve_export_dir(path):
    """A SavedModel directory, or the highest integer version inside it."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(d) for d in (os.listdir(path) if os.path.isdir(
        path) else []) if d.isdigit()), reverse=True)
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    from bncr_tf.errors import UserError
    raise UserError(f"{path} is not a SavedModel directory and holds no "
                    f"integer version with a saved_model.pb")


def score(stats, reference, metrics=("fid",), kid_subsets=KID_SUBSETS,
          kid_subset_size=KID_SUBSET_SIZE, seed=0):
    """Scores generated feature statistics against a reference.

    Args:
      stats: `fid.FeatureStats` of the generated images (with raw features
        kept when "kid" is requested).
      reference: `reference.ReferenceStats` (with features for "kid").
      metrics: subset of ("fid", "kid").
      kid_subsets, kid_subset_size, seed: KID subset protocol.
    Returns:
      dict with "fid" and/or "kid", "kid_std", "kid_subset_size".
    """
    out = {}
    if "fid" in metrics:
        out["fid"] = fid_lib.frechet_distance(stats.mean(), stats.cov(),
                                              reference.mu, reference.sigma)
    if "kid" in metrics:
        if reference.features is None or not len(stats.features()):
            raise ValueError("KID needs raw features of both sets; request "
                             "them with num_features / max_features")
        kid = fid_lib.kernel_distance(stats.features(), reference.features,
                                      kid_subsets, kid_subset_size, seed)
        out.update(kid=kid["kid"], kid_std=kid["kid_std"],
                   kid_subset_size=kid["subset_size"])
    return out


def evaluate_images(chunks, reference, extractor, num_samples,
                    metrics=("fid",), kid_subsets=KID_SUBSETS,
                    kid_subset_size=KID_SUBSET_SIZE, progress=True,
                    label="generated"):
    """FID / KID of an iterable of uint8 image chunks against a reference.

    Returns:
      dict as `score` plus "num_samples" and "seconds".
    """
    check_reference(reference, extractor)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    start = time.time()
    keep = num_samples if "kid" in metrics else 0
    stats = features_lib.extract_statistics(
        chunks, extractor, total=num_samples, max_features=keep, label=label,
        progress=progress)
    out = score(stats, reference, metrics, kid_subsets, kid_subset_size)
    out.update(num_samples=stats.count, seconds=time.time() - start)
    return out


def evaluate_generators(gens, reference, num_samples, extractor, seed=0,
                        metrics=("fid",), batch_size=100, z_dim=None,
                        kid_subsets=KID_SUBSETS,
                        kid_subset_size=KID_SUBSET_SIZE, progress=True):
    """FID / KID of a model's clean images G_x(z_x): the trainer's hook.

    Args:
      gens: `synthesis.Generators` (pass the EMA copies).
      reference: `reference.ReferenceStats` computed with `extractor` (with
        raw features when "kid" is requested).
      num_samples: number of generated images.
      extractor: feature extractor (callable uint8 [N, H, W, 3] -> [N, D]).
      seed: seed of the first image (image i uses seed + i).
      metrics: subset of ("fid", "kid").
      batch_size: images per generator call.
      z_dim: latent size (None: gens.G_x.z_dim).
      kid_subsets, kid_subset_size: KID protocol (stylegan2-ada: 100, 1000).
      progress: print images/s and ETA to stderr.
    Returns:
      dict: "fid" (float), "kid", "kid_std", "kid_subset_size" (when
      requested), "num_samples", "seconds".
    """
    chunks = generated_images(gens, num_samples, seed, batch_size, z_dim)
    return evaluate_images(chunks, reference, extractor, num_samples,
                           metrics, kid_subsets, kid_subset_size, progress)


def check_reference(reference, extractor):
    """Refuses reference statistics computed with another extractor."""
    want = getattr(extractor, "fingerprint", None)
    have = (reference.meta.get("extractor") or {}).get("fingerprint")
    if want and have and want != have:
        raise ValueError(f"reference statistics were computed with {have}, "
                         f"not with {want}")


def metric_record(metric, result, num_samples, reference, extractor,
                  step=None, checkpoint=None, seed=0):
    """The JSON line of one metric result (metric-<name>.jsonl).

    Returns:
      dict with metric, value, (std for KID), step, checkpoint,
      num_samples, seed, reference, extractor, seconds, time.
    """
    record = {"metric": metric_name(metric, num_samples),
              "value": result[metric],
              "step": step, "checkpoint": checkpoint,
              "num_samples": result.get("num_samples", num_samples),
              "seed": seed,
              "reference": {k: reference.meta.get(k) for k in (
                  "source", "resolution", "limit", "seed", "key")},
              "extractor": features_lib.extractor_info(extractor),
              "seconds": round(result.get("seconds", 0.0), 3),
              "time": time.time()}
    record["reference"]["num_images"] = reference.num_images
    if metric == "kid":
        record["std"] = result["kid_std"]
        record["subset_size"] = result["kid_subset_size"]
    return record


def append_metric(directory, name, record):
    """Appends one JSON line to `<directory>/metric-<name>.jsonl`.

    Returns:
      The file path.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"metric-{name}.jsonl")
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
    return path
