"""The measurement F of UNIR: re-degrades restored images x_hat.

F(x_hat, theta) is `synthesis.degrade`, the one degradation path of the
project, with one of two sets of degradation "generators":

  * UNIR-dagger: the true degradation of the run's setting
    (`models.true_degradation`, AmbientGAN's TRUE stages: kernels, camera
    noise and JPEG qualities sampled as the dataset builder samples them);
  * BNCR-GAN+UNIR (--degradation_from=<run dir>): the frozen EMA G_k, G_n,
    G_q of a trained BNCR-GAN family run, with its masks and psi^g
    (`runs.load_generators`).

theta is (latents z_k, z_n, z_q, z_x, stateless seed): calling `measure`
twice with the same theta applies the same kernel, quality, masks and noise
draw eps (the noise itself follows the image for signal-dependent noise).
"""

import dataclasses
import os

from bncr_tf import models
from bncr_tf import runs
from bncr_tf import synthesis
from bncr_tf import variants as variants_lib
from bncr_tf.errors import UserError


@dataclasses.dataclass
class Measurement:
    """F: `gens` (a `synthesis.Generators` whose G_x is unused), the
    latent size of its generators and a one-line description."""

    gens: synthesis.Generators
    z_dim: int
    description: str
    source_run: str = ""

    def models(self):
        """{name: model} of the frozen learned generators (none for the
        true degradation)."""
        return self.gens.models()

    def theta(self, batch, seed):
        """Latents of theta for `batch` images from a stateless seed [2]."""
        return synthesis.sample_latents(batch, self.z_dim, seed)

    def __call__(self, x, latents, seed):
        """F(x, theta): degraded images [B, R, R, 3] in [-1, 1]."""
        return synthesis.degrade(self.gens, x, latents, seed).y


def build_measurement(config):
    """F of a restoration run's `TrainConfig`.

    Raises:
      UserError: --degradation_from is not a run directory with a
        checkpoint, has no degradation stage, or another resolution.
    """
    if not config.degradation_from:
        gens = models.true_degradation(config)
        setting = gens.ambient[0]
        return Measurement(gens, config.z_dim,
                           f"true degradation of setting {setting.name} "
                           f"(UNIR-dagger)")
    run_dir = config.degradation_from
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UserError(f"--degradation_from={run_dir} is not a run "
                        f"directory (no config.json)")
    source = runs.load_config(run_dir)
    if variants_lib.is_restoration(source.variant):
        raise UserError(f"--degradation_from={run_dir} is a "
                        f"{source.variant} run; give a BNCR-GAN family run")
    if source.resolution != config.resolution:
        raise UserError(
            f"--degradation_from={run_dir} was trained at "
            f"{source.resolution} px; this run needs --resolution="
            f"{source.resolution} (G_n works at its training resolution)")
    _, gens, path = runs.load_generators(run_dir, ema=True)
    if not gens.stages():
        raise UserError(f"--degradation_from={run_dir} ({source.variant}) "
                        f"has no degradation stage")
    for model in gens.models().values():
        model.trainable = False
    gens = dataclasses.replace(gens, G_x=None)
    return Measurement(gens, source.z_dim,
                       f"frozen EMA generators of {source.variant} "
                       f"({os.path.basename(path)} of {run_dir}; "
                       f"BNCR-GAN+UNIR)", source_run=os.path.abspath(run_dir))


def frozen_variables(measurement):
    """Every variable of F's learned generators (for tests and checks)."""
    out = []
    for model in measurement.models().values():
        out.extend(model.variables)
    return out


def assert_no_trainable(measurement):
    """F's generators must not be trained by the restoration run."""
    for name, model in measurement.models().items():
        if model.trainable_variables:
            raise AssertionError(f"{name} of F is trainable")

