"""The one synthesis function: latents -> (x, k, n, q, m_k, m_q, y).

It implements the generator side of y = psi(x * k + n, q) (paper eq. 1 and
eq. 6) for every variant of `bncr_tf.variants`; the G step, the D step, the
image grids, monitoring, metrics and export all call `synthesize`.

Units: x and y are [B, R, R, 3] float32 in [-1, 1] (network range); the
noise n is in the same [-1, 1] units (n / 2 in [0, 1] units); k is
[B, K, K] with unit sum; q is [B] in [0, 100]; m_k is [B, K, K] and m_q [B]
in [0, 1]. Degradations run in float32 on [0, 1] images.
"""

import dataclasses

import tensorflow as tf

from bncr_tf import stages as stages_lib
from bncr_tf import variants as variants_lib
from bncr_tf.degradations import settings as settings_lib

TRUE = variants_lib.TRUE
# z_x, then each stage's latent in stage order (z_k, z_n, z_q): the order
# fixes which split of the seed each latent is drawn from.
LATENTS = ("z_x",) + tuple(s.latent for s in stages_lib.STAGES)


@dataclasses.dataclass
class Generators:
    """The generator side of a model: G_x and whichever of G_k, G_n, G_q the
    variant uses (learned generators, or P-AmbientGAN parameter models).

    Attributes:
      G_x, G_k, G_n, G_q: keras models or None.
      variant: the resolved `Variant` (stages concrete).
      noise_prior: prior applied to G_n's output.
      ambient: for AmbientGAN, (setting, kernel bank [n, K, K]); else None.
      rounding: rounding mode of the differentiable JPEG psi^g.
      jpeg_storage: model libjpeg's 8-bit sample storage in psi^g and
        dequantise its output as the real data are (see `degrade`).
      quality_gradient: how psi^g differentiates q ("analytic" or "fd",
        see `jpeg.diff_jpeg`).
      fake_storage: store every degraded fake as the reals are stored:
        8-bit rounding (straight-through) and dequantisation (see
        `degrade`).
    """

    G_x: object
    G_k: object = None
    G_n: object = None
    G_q: object = None
    variant: variants_lib.Variant = None
    noise_prior: str = "none"
    ambient: tuple = None
    rounding: str = "ste"
    jpeg_storage: bool = False
    quality_gradient: str = "analytic"
    fake_storage: bool = False

    def models(self):
        """{name: model} of the networks that exist (for checkpoints/EMA),
        G_x first, then the stages' networks in stage order."""
        names = ("G_x",) + tuple(s.network for s in stages_lib.STAGES)
        return {name: getattr(self, name) for name in names
                if getattr(self, name) is not None}

    def stages(self):
        """The `stages.Stage`s the variant has, in order."""
        return stages_lib.active(self.variant)

    def network(self, stage):
        """The network of a stage (G_k, G_n or G_q), or None."""
        return getattr(self, stage.network)

    def view(self, *names):
        """These generators with only the named stages ("blur", "noise",
        "jpeg"); the others are off and their networks dropped."""
        return dataclasses.replace(
            self, variant=stages_lib.only(self.variant, names),
            **{s.network: None for s in stages_lib.STAGES
               if s.name not in names})

    def trainable_variables(self):
        out = []
        for model in self.models().values():
            out.extend(model.trainable_variables)
        return out


def sample_latents(batch, z_dim, seed):
    """Standard normal latents z_x, z_k, z_n, z_q, each [batch, z_dim].

    Args:
      batch: int or scalar int tensor.
      z_dim: latent size.
      seed: int tensor [2], stateless seed.
    Returns:
      dict of float32 tensors.
    """
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=len(LATENTS))
    return {name: tf.random.stateless_normal([batch, z_dim], seeds[i])
            for i, name in enumerate(LATENTS)}


def latents_from_seeds(seeds, z_dim):
    """Latents of one image per integer seed: image i depends on seeds[i]
    only (used by exports and evaluation so a seed always gives the same
    image).

    Args:
      seeds: int tensor [B].
      z_dim: latent size.
    Returns:
      dict of float32 [B, z_dim] tensors z_x, z_k, z_n, z_q.
    """
    seeds = tf.cast(seeds, tf.int64)

    def one(seed):
        z = sample_latents(1, z_dim, tf.stack([seed, tf.zeros_like(seed)]))
        return {k: v[0] for k, v in z.items()}

    spec = {k: tf.TensorSpec([z_dim], tf.float32) for k in LATENTS}
    return tf.map_fn(one, seeds, fn_output_signature=spec)


def synthesize(gens, latents, seed, with_aux=False):
    """Generates clean images, degradations and degraded images.

    x = G_x(z_x), then `degrade` applies k, n and q (paper eq. 6).

    Args:
      gens: a `Generators`.
      latents: dict from `sample_latents` (z_x, z_k, z_n, z_q).
      seed: int tensor [2]: stateless seed of eps, noise transforms and
        AmbientGAN's sampled degradations.
      with_aux: also return the inputs of L_AC (see `degrade`).
    Returns:
      A `stages.Synthesis` with x, y and, for the stages the variant has,
      k, k_hat, m_k, n, q, m_q (see the module docstring for shapes and
      units).
    """
    x = tf.cast(gens.G_x(latents["z_x"]), tf.float32)
    return degrade(gens, x, latents, seed, with_aux=with_aux)


def degrade(gens, x, latents, seed, with_aux=False):
    """Applies the variant's degradation stages to clean images x.

    y = psi(clip(x * k + n), q) with the masks of eqs. 3 and 5: a loop over
    the stages of `bncr_tf.stages` the variant has, each sampling its
    parameters and degrading the image in turn. x may come from G_x
    (training) or from real clean images (degradation calibration, the
    `degrade` export).

    Args:
      gens: a `Generators` (G_x is not used here).
      x: clean images [B, R, R, 3] float32 in [-1, 1].
      latents: dict with z_k, z_n, z_q ([B, z_dim]) and z_x when G_n is
        implicit.
      seed: int tensor [2], stateless seed (eps, transforms, AmbientGAN).
      with_aux: also compute what L_AC needs: `entropy` ([B] kernel
        entropy), `x_blur` (x * k) and `x_comp` (psi^g(x, q) without mask,
        an extra psi^g pass), in [-1, 1], for the stages that exist.
    Returns:
      A `stages.Synthesis`: x, y and the outputs of the variant's stages (a
      learned or parameter G_n also gives n_ds, the noise before the random
      transforms, and n_std, what the diversity-sensitive loss compares).
    """
    v = gens.variant
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=4)
    x = tf.cast(x, tf.float32)
    result = stages_lib.Synthesis(x=x)
    batch = tf.shape(x)[0]
    u0 = (x + 1.0) / 2.0
    u = u0  # the image in [0, 1] units, degraded stage by stage
    true = None
    if any(s.mode(v) == TRUE for s in stages_lib.STAGES):
        setting, bank = gens.ambient
        true = settings_lib.sample_degradation_tf(setting, batch, seeds[3],
                                                  bank)
    p = stages_lib.Pass(gens=gens, x=x, latents=latents, seeds=seeds,
                        true=true, with_aux=with_aux)
    for stage in stages_lib.active(v):
        u = stage.degrade(p, result, u)

    if gens.fake_storage:
        # Every fake stored as the reals are (data.dequantize): 8-bit
        # rounding with an identity gradient, then (u8 + U(0, 1)) / 256.
        u8 = u * 255.0
        u8 = u8 + tf.stop_gradient(tf.round(u8) - u8)
        u = (u8 + tf.random.stateless_uniform(tf.shape(u), seeds[2])) / 256.0
        result.y = 2.0 * u - 1.0
        return result
    # y = x + 2 (u - u0) rather than 2 u - 1: bit-exact y = x when every
    # stage is bypassed (m_k = 0, no noise, m_q = 0).
    result.y = x + 2.0 * (u - u0)
    return result
