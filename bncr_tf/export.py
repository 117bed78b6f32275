"""SavedModels for TF Serving: G_x and the learned degradation generators.

`export_generators` writes `<export_root>/<name>/<version>/` (TF Serving's
model-base-path layout) for each model a run has:

| name | signature | inputs | outputs |
| --- | --- | --- | --- |
| generator | serving_default | z float32 [None, z_dim] | image uint8 [None, R, R, 3], image_float float32 [-1, 1] |
| generator | from_seed | seed int64 [None] | same |
| blur_kernel | serving_default / from_seed | z_k / seed | kernel float32 [None, K, K], mask [None, K, K], entropy [None] |
| noise | serving_default | image uint8 [None, R, R, 3], seed int64 [None] | noise float32 [None, R, R, 3] (intensity units, [0, 1] scale) |
| quality | serving_default / from_seed | z_q / seed | quality float32 [None], mask [None] |
| degrade | serving_default | image uint8 [None, R, R, 3], seed int64 [None] | image uint8, image_float [-1, 1], kernel, quality, mask_quality |

A seed s gives the latents `synthesis.latents_from_seeds`: the same seed
always gives the same output, whatever else is in the request. Inputs are
float32 / uint8 / int64 even when the run trained with mixed precision.
Exports are written to a temporary directory and renamed into place; an
existing version is never overwritten.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from bncr_tf import synthesis
from bncr_tf.degradations import kernels as kernels_lib

WARMUP_FILE = "tf_serving_warmup_requests"


def _to_uint8(images):
    """float32 [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0,
                                    255.0), tf.uint8)


def _from_uint8(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def _per_image(fn, images, seeds, signature):
    """Runs fn(image [1, ...], seed scalar) per image: results never depend
    on the other images of the request."""
    return tf.map_fn(lambda a: fn(a[0][None], a[1]), (images, seeds),
                     fn_output_signature=signature)


class _Endpoints:
    """Builds the endpoint functions of one run's EMA generators."""

    def __init__(self, gens, z_dim, resolution):
        self.gens = gens
        self.z_dim = z_dim
        self.r = resolution

    def latents(self, seeds):
        return synthesis.latents_from_seeds(seeds, self.z_dim)

    # generator
    def image_from_z(self, z):
        x = tf.cast(self.gens.G_x(z), tf.float32)
        return {"image": _to_uint8(x), "image_float": x}

    # blur_kernel
    def kernel_from_z(self, z_k):
        g = self.gens.G_k(z_k)
        return {"kernel": g["k"], "mask": g["m_k"],
                "entropy": kernels_lib.kernel_entropy(g["k"])}

    # quality
    def quality_from_z(self, z_q):
        g = self.gens.G_q(z_q)
        return {"quality": g["q"], "mask": g["m_q"]}

    # degrade / noise
    def _degrade_one(self, image, seed):
        latents = self.latents(seed[None])
        out = synthesis.degrade(self.gens, _from_uint8(image), latents,
                                tf.stack([seed, tf.constant(7, tf.int64)]))
        return {
            "image": _to_uint8(out["y"])[0],
            "image_float": out["y"][0],
            "noise": (out["n"][0] / 2.0 if "n" in out
                      else tf.zeros([self.r, self.r, 3])),
            "kernel": out["k"][0] if "k" in out else tf.ones([1, 1]),
            "quality": out["q"][0] if "q" in out else tf.constant(100.0),
            "mask_quality": out["m_q"][0] if "m_q" in out else
            tf.constant(0.0),
        }

    def degrade(self, image, seed):
        spec = {"image": tf.TensorSpec([self.r, self.r, 3], tf.uint8),
                "image_float": tf.TensorSpec([self.r, self.r, 3], tf.float32),
                "noise": tf.TensorSpec([self.r, self.r, 3], tf.float32),
                "kernel": tf.TensorSpec(None, tf.float32),
                "quality": tf.TensorSpec([], tf.float32),
                "mask_quality": tf.TensorSpec([], tf.float32)}
        return _per_image(self._degrade_one, image, seed, spec)


def next_version(model_dir):
    """1 + the largest integer version directory in model_dir (1 if none)."""
    versions = [int(d) for d in (os.listdir(model_dir)
                                 if os.path.isdir(model_dir) else [])
                if d.isdigit()]
    return max(versions, default=0) + 1


def _write_archive(archive, model_dir):
    """Writes to a temporary directory, then renames to the next version."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir)
    try:
        archive.write_out(os.path.join(tmp, "model"), verbose=False)
        while True:
            target = os.path.join(model_dir, str(next_version(model_dir)))
            try:
                os.rename(os.path.join(tmp, "model"), target)
                return target
            except OSError:
                if not os.path.exists(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_generators(gens, z_dim, resolution, export_root):
    """Exports one SavedModel per model of `gens` (use the EMA copies).

    Args:
      gens: a `synthesis.Generators`.
      z_dim: latent size.
      resolution: image size R.
      export_root: directory receiving <name>/<version>/.
    Returns:
      list of the written version directories.
    """
    ep = _Endpoints(gens, z_dim, resolution)
    r = resolution
    z = tf.TensorSpec([None, z_dim], tf.float32)
    seeds = tf.TensorSpec([None], tf.int64, name="seed")
    images = tf.TensorSpec([None, r, r, 3], tf.uint8, name="image")
    plans = [("generator", gens.G_x, [
        ("serving_default", ep.image_from_z, [tf.TensorSpec(
            [None, z_dim], tf.float32, name="z")]),
        ("from_seed", lambda s: ep.image_from_z(ep.latents(s)["z_x"]),
         [seeds])])]
    if gens.G_k is not None:
        plans.append(("blur_kernel", gens.G_k, [
            ("serving_default", ep.kernel_from_z,
             [tf.TensorSpec([None, z_dim], tf.float32, name="z_k")]),
            ("from_seed", lambda s: ep.kernel_from_z(ep.latents(s)["z_k"]),
             [seeds])]))
    if gens.G_q is not None:
        plans.append(("quality", gens.G_q, [
            ("serving_default", ep.quality_from_z,
             [tf.TensorSpec([None, z_dim], tf.float32, name="z_q")]),
            ("from_seed", lambda s: ep.quality_from_z(ep.latents(s)["z_q"]),
             [seeds])]))
    if gens.G_n is not None:
        plans.append(("noise", gens.G_n, [
            ("serving_default",
             lambda i, s: {"noise": ep.degrade(i, s)["noise"]},
             [images, seeds])]))
    has_stage = any(m is not None for m in (gens.G_k, gens.G_n, gens.G_q))
    if has_stage or gens.ambient is not None:
        plans.append(("degrade", None, [
            ("serving_default", ep.degrade, [images, seeds])]))
    del z
    written = []
    for name, model, endpoints in plans:
        archive = keras.export.ExportArchive()
        for tracked in ([model] if model is not None
                        else list(gens.models().values())):
            archive.track(tracked)
        for key, fn, signature in endpoints:
            archive.add_endpoint(key, tf.function(fn), input_signature=signature)
        written.append(_write_archive(archive, os.path.join(export_root,
                                                            name)))
    return written


def export_run(trainer, export_root):
    """Exports a trainer's EMA generators (called at the end of training)."""
    c = trainer.config
    return export_generators(trainer.gens_ema, c.z_dim, c.resolution,
                             export_root)
