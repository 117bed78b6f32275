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

from bncr_tf import variants as variants_lib
from bncr_tf.degradations import kernels as blur_lib
from bncr_tf.degradations import jpeg as jpeg_lib
from bncr_tf.degradations import noise as noise_camera
from bncr_tf.degradations import settings as settings_lib
from bncr_tf.networks import noise_generator as noise_lib

LEARNED, PARAM, TRUE, NONE = (variants_lib.LEARNED, variants_lib.PARAM,
                              variants_lib.TRUE, variants_lib.NONE)


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
        """{name: model} of the networks that exist (for checkpoints/EMA)."""
        return {name: getattr(self, name)
                for name in ("G_x", "G_k", "G_n", "G_q")
                if getattr(self, name) is not None}

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
        tf.cast(seed, tf.int64), num=4)
    return {name: tf.random.stateless_normal([batch, z_dim], seeds[i])
            for i, name in enumerate(("z_x", "z_k", "z_n", "z_q"))}


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

    spec = {k: tf.TensorSpec([z_dim], tf.float32)
            for k in ("z_x", "z_k", "z_n", "z_q")}
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
      dict with "x", "y" and, for the stages the variant has, "k", "k_hat",
      "m_k", "n", "q", "m_q" (see the module docstring for shapes and units).
    """
    x = tf.cast(gens.G_x(latents["z_x"]), tf.float32)
    return degrade(gens, x, latents, seed, with_aux=with_aux)


def degrade(gens, x, latents, seed, with_aux=False):
    """Applies the variant's degradation stages to clean images x.

    y = psi(clip(x * k + n), q) with the masks of eqs. 3 and 5. x may come
    from G_x (training) or from real clean images (degradation calibration,
    the `degrade` export).

    Args:
      gens: a `Generators` (G_x is not used here).
      x: clean images [B, R, R, 3] float32 in [-1, 1].
      latents: dict with z_k, z_n, z_q ([B, z_dim]) and z_x when G_n is
        implicit.
      seed: int tensor [2], stateless seed (eps, transforms, AmbientGAN).
      with_aux: also return what L_AC needs: "entropy" ([B] kernel
        entropy), "x_blur" (x * k) and "x_comp" (psi^g(x, q) without mask,
        an extra psi^g pass), in [-1, 1], when those stages exist.
    Returns:
      dict with "x", "y" and the stage outputs, as `synthesize`; a learned
      or parameter G_n also gives "n_ds", the noise before the random
      transforms (what the diversity-sensitive loss compares).
    """
    v = gens.variant
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=4)
    x = tf.cast(x, tf.float32)
    out = {"x": x}
    batch = tf.shape(x)[0]
    u0 = (x + 1.0) / 2.0
    u = u0  # the image in [0, 1] units, degraded stage by stage
    true = None
    if TRUE in (v.blur, v.noise, v.jpeg):
        setting, bank = gens.ambient
        true = settings_lib.sample_degradation_tf(setting, batch, seeds[3],
                                                  bank)

    # Blur: x * k, with the masked kernel of eq. 3.
    if v.blur in (LEARNED, PARAM):
        g = gens.G_k(latents["z_k"])
        out.update(k=g["k"], m_k=g["m_k"], k_hat=g["k_hat"])
    elif v.blur == TRUE:
        out.update(k=true.kernels,
                   m_k=true.blur_mask[:, None, None] * tf.ones_like(
                       true.kernels))
    if "k" in out:
        u = tf.clip_by_value(blur_lib.blur(u, out["k"]), 0.0, 1.0)
        if with_aux:
            out["entropy"] = blur_lib.kernel_entropy(out["k"])
            out["x_blur"] = 2.0 * u - 1.0

    # Noise: y = clip(x * k + n) in NR-GAN's [-1, 1] units.
    if v.noise in (LEARNED, PARAM):
        if v.implicit:
            maps = gens.G_n(latents["z_n"], latents["z_x"])
        else:
            maps = gens.G_n(latents["z_n"])
        n = noise_lib.apply_prior(gens.noise_prior, maps, x=2.0 * u - 1.0,
                                  seed=seeds[0])
        out["n_ds"] = n
        # The noise std map (eps = 1): what G_n controls, without the
        # sampled eps (the "std" target of the diversity-sensitive loss).
        out["n_std"] = noise_lib.apply_prior(
            gens.noise_prior, maps, x=2.0 * u - 1.0, eps=tf.ones_like(n))
        if v.rotation or v.channel_shuffle or v.sign_flip:
            n = noise_lib.random_noise_transforms(
                n, seeds[1], rotation=v.rotation,
                channel_shuffle=v.channel_shuffle, sign_flip=v.sign_flip)
        out["n"] = n
    elif v.noise == TRUE:
        eps = tf.random.stateless_normal(tf.shape(u), seeds[0])
        n01 = noise_camera.camera_noise(u, true.shot, true.read, eps)
        out["n"] = 2.0 * n01 * true.noise_mask[:, None, None, None]
    if "n" in out:
        u = tf.clip_by_value(u + out["n"] / 2.0, 0.0, 1.0)

    # JPEG: y = m_q psi^g(., q) + (1 - m_q) (.), eq. 5.
    if v.jpeg in (LEARNED, PARAM):
        g = gens.G_q(latents["z_q"])
        out.update(q=g["q"], m_q=g["m_q"])
    elif v.jpeg == TRUE:
        out.update(q=true.quality, m_q=true.jpeg_mask)
    if "q" in out:
        m_q = out["m_q"][:, None, None, None]
        psi = jpeg_lib.diff_jpeg(u, out["q"], rounding=gens.rounding,
                                 sample_rounding=gens.jpeg_storage,
                                 quality_gradient=gens.quality_gradient)
        if gens.jpeg_storage and not gens.fake_storage:
            # The reals are decoded to uint8 and dequantised (data.dequantize:
            # v = 2 (u8/255 * 255/256 - 1/2) + U(0, 1/128)); psi's output is
            # now u8/255, so give it the same map and noise, in [0, 1] units.
            psi = psi * (255.0 / 256.0) + tf.random.stateless_uniform(
                tf.shape(psi), seeds[2]) / 256.0
        u = m_q * psi + (1.0 - m_q) * u
        if with_aux:
            x01 = (x + 1.0) / 2.0
            out["x_comp"] = 2.0 * jpeg_lib.diff_jpeg(
                x01, out["q"], rounding=gens.rounding,
                sample_rounding=gens.jpeg_storage) - 1.0

    if gens.fake_storage:
        # Every fake stored as the reals are (data.dequantize): 8-bit
        # rounding with an identity gradient, then (u8 + U(0, 1)) / 256.
        u8 = u * 255.0
        u8 = u8 + tf.stop_gradient(tf.round(u8) - u8)
        u = (u8 + tf.random.stateless_uniform(tf.shape(u), seeds[2])) / 256.0
        out["y"] = 2.0 * u - 1.0
        return out
    # y = x + 2 (u - u0) rather than 2 u - 1: bit-exact y = x when every
    # stage is bypassed (m_k = 0, no noise, m_q = 0).
    out["y"] = x + 2.0 * (u - u0)
    return out
