"""The blur that turns sharp images into training pairs (DeblurGAN family).

A paired restorer learns from (x, y) with y = F(x, theta): sharp images x
of --data and a blur F chosen by the run's config:

  * the true degradation of --ambient_setting or --setting (e.g. setting
    C, the motion-blur trajectories of Boracchi & Foi that DeblurGAN
    generates its own training blur with), sampled in the graph as the
    dataset builder samples it;
  * --degradation_from=<run dir>: the frozen EMA G_k, G_n, G_q of a
    BNCR-GAN family run (or a calibration-mode run);
  * --pairs_from=<degrade export>: a `degrade` SavedModel written by
    `bncr_tf.export` (any BNCR-GAN family run's, or AmbientGAN's), the
    workflow "learn the blur of your photos, export it, synthesise pairs".

The first two are `bncr_tf.measurement.Measurement`s (the one degradation
path, `synthesis.degrade`); the third is `ExportMeasurement`, with the same
`theta` / call interface. Every y is rounded to 8 bits, as the photos a
restorer meets are ([choice], docs/deblurgan.md).
"""

import json
import os

import tensorflow as tf

from bncr_tf import measurement as measurement_lib
from bncr_tf.errors import UserError


def _version_dir(path):
    """`path` itself when it is a SavedModel, else its newest numbered
    version directory (`metrics.evaluation.resolve_export_dir`)."""
    from bncr_tf.metrics import evaluation
    try:
        return evaluation.resolve_export_dir(path)
    except UserError:
        raise UserError(f"--pairs_from={path} is not a degrade export (no "
                        f"saved_model.pb in it or in a numbered "
                        f"version)") from None


class ExportMeasurement:
    """F from a `degrade` SavedModel: uint8 image [N, R, R, 3] and int64
    seed [N] -> image_float [N, R, R, 3] in [-1, 1].

    theta is one int64 export seed per image, drawn from the stateless
    training seed; the export then draws the latents and noise of that
    seed (`bncr_tf.export`, "Seeds").
    """

    def __init__(self, path):
        self.path = _version_dir(path)
        try:
            loaded = tf.saved_model.load(self.path)
            self._fn = loaded.signatures["serving_default"]
        except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
            raise UserError(f"--pairs_from={path}: cannot load its "
                            f"serving_default signature ({e})") from None
        self._loaded = loaded
        inputs = self._fn.structured_input_signature[1]
        if set(inputs) != {"image", "seed"}:
            raise UserError(f"--pairs_from={path} takes {sorted(inputs)}; "
                            f"a degrade export takes image and seed")
        self.resolution = inputs["image"].shape[1]
        info = os.path.join(self.path, "assets.extra", "bncr_export.json")
        source = ""
        if os.path.isfile(info):
            with open(info) as f:
                source = json.load(f).get("run_dir", "")
        self.source_run = source
        self.description = (f"degrade export {self.path}"
                            + (f" of {source}" if source else ""))

    def models(self):
        return {}

    def theta(self, batch, seed):
        """int64 [batch] export seeds from a stateless seed [2]."""
        return tf.random.stateless_uniform(
            [batch], seed, minval=0, maxval=2 ** 62, dtype=tf.int64)

    def __call__(self, x, latents, seed):
        """F(x): x float32 [B, R, R, 3] in [-1, 1] -> y in [-1, 1]."""
        del seed
        u8 = tf.cast(tf.round(tf.clip_by_value((x + 1.0) * 127.5, 0.0,
                                               255.0)), tf.uint8)
        return self._fn(image=u8, seed=latents)["image_float"]


def build_pair_maker(config):
    """F of a paired restorer's config (module docstring).

    Raises:
      UserError: a --pairs_from that is not a degrade export or has another
        resolution; the errors of `measurement.build_measurement`.
    """
    if config.pairs_from:
        f = ExportMeasurement(config.pairs_from)
        if f.resolution != config.resolution:
            raise UserError(
                f"--pairs_from={config.pairs_from} degrades "
                f"{f.resolution} px images; this run needs --resolution="
                f"{f.resolution}")
        return f
    return measurement_lib.build_measurement(config)


def quantise(y):
    """y in [-1, 1] rounded to the 8-bit grid (no gradient needed)."""
    u = tf.round(tf.clip_by_value((y + 1.0) * 127.5, 0.0, 255.0))
    return u / 127.5 - 1.0
