"""G_n: the noise generator, its noise priors and NR-GAN's random transforms.

Units. NR-GAN works in the network range [-1, 1]; our camera prior works in
the degradation range [0, 1] (design.md). Every function states which:

| function | x expected in | noise returned in |
| --- | --- | --- |
| `additive_gaussian(s, eps)` | (no x) | units of s ([-1, 1] units) |
| `multiplicative_gaussian(s, x, eps)` | [-1, 1] | [-1, 1] units |
| `poisson(s, x, eps)` | [-1, 1] | [-1, 1] units |
| `camera(read, shot, x01, eps)` | [0, 1] | [0, 1] units |
| `apply_prior(prior, maps, x, eps)` | [-1, 1] | [-1, 1] units |

A noise of v in [-1, 1] units is v / 2 in [0, 1] units.

Camera prior parameterisation (ours; spec degradations.md section 3):
n = eps * sqrt(read + shot * x01), with per-pixel, per-channel maps
read = exp(la), shot = exp(lb) and
  la = m_a + h_a * tanh(r_a / 2 + t_a),  lb = m_b + h_b * tanh(r_b / 2 + t_b),
where r_a, r_b are G_n's raw outputs (channels 0-2 and 3-5), m_a +- h_a
spans [ln 1e-9, ln 1e-1] (read), m_b +- h_b spans [ln 1e-6, ln 1e-1] (shot),
and the offsets t place raw = 0 at the centre of Brooks' distribution:
shot_0 = sqrt(1e-4 * 1.2e-2) = 1.1e-3 (geometric middle of [1e-4, 1.2e-2])
and read_0 = exp(1.2) * shot_0 ** 2.18 = 1.2e-6.
"""

import math

import keras
import tensorflow as tf
from keras import ops

from bncr_tf.networks import layers as L
from bncr_tf.networks.image_generator import ImageGenerator

PRIORS = ("none", "additive_gaussian", "multiplicative_gaussian", "poisson",
          "camera")

# Camera prior: ranges of the variance coefficients and their values at
# raw = 0 (the centre of Brooks' distribution).
CAMERA_READ_RANGE = (1e-9, 1e-1)
CAMERA_SHOT_RANGE = (1e-6, 1e-1)
CAMERA_SHOT_INIT = math.sqrt(1e-4 * 1.2e-2)
CAMERA_READ_INIT = math.exp(1.2) * CAMERA_SHOT_INIT ** 2.18
# Raw outputs are halved before the tanh so that the initial per-pixel
# spread (raw std ~0.3 at width 128, ~0.6 at width 32) keeps most initial
# levels inside Brooks' ranges.
CAMERA_RAW_SCALE = 0.5


def camera_log_variance(raw, value_range, init_value):
    """Maps raw outputs to ln(variance) inside ln(value_range).

    ln v = m + h * tanh(CAMERA_RAW_SCALE * raw + t), with
    m +- h = ln(value_range) and t = atanh((ln(init_value) - m) / h), so
    raw = 0 gives init_value.

    Args:
      raw: raw G_n outputs, any shape, float.
      value_range: (low, high) of the variance coefficient, 0 < low < high.
      init_value: variance coefficient produced at raw = 0, inside the range.
    Returns:
      ln(variance coefficient), same shape, float32 (float64 if raw is).
    """
    lo, hi = math.log(value_range[0]), math.log(value_range[1])
    m, h = 0.5 * (hi + lo), 0.5 * (hi - lo)
    offset = math.atanh((math.log(init_value) - m) / h)
    dtype = getattr(raw, "dtype", "float32")
    is_f64 = keras.backend.standardize_dtype(dtype) == "float64"
    raw = ops.cast(raw, "float64" if is_f64 else "float32")
    return m + h * ops.tanh(CAMERA_RAW_SCALE * raw + offset)


def _eps_like(x, eps, seed):
    """Returns eps, or N(0, 1) noise shaped like x (stateless if seed)."""
    if eps is not None:
        return ops.cast(eps, "float32")
    shape = tf.shape(x)
    if seed is not None:
        return tf.random.stateless_normal(shape, seed, dtype=tf.float32)
    return tf.random.normal(shape, dtype=tf.float32)


def additive_gaussian(s, eps=None, seed=None):
    """NR-GAN additive Gaussian prior (SI-NR-GAN-I, SD-NR-GAN-II).

    n = eps * s: zero-mean Gaussian with the learned per-pixel std |s|.

    Args:
      s: std map [B, H, W, C] float (G_n's tanh output, [-1, 1] units).
      eps: standard normal noise shaped like s; drawn if None.
      seed: optional stateless seed [2] int used when eps is None.
    Returns:
      n [B, H, W, C] float32 in [-1, 1] units.
    """
    s = ops.cast(s, "float32")
    return _eps_like(s, eps, seed) * s


def multiplicative_gaussian(s, x, eps=None, seed=None):
    """NR-GAN multiplicative Gaussian prior (SD-NR-GAN-I).

    n = eps * s * x01 * 2 with x01 = (x + 1) / 2 and x detached, so no
    gradient flows from the noise into G_x.

    Args:
      s: std map [B, H, W, C] float, [-1, 1] units.
      x: clean (or blurred) image [B, H, W, C] float in [-1, 1].
      eps: standard normal noise shaped like s; drawn if None.
      seed: optional stateless seed [2] int used when eps is None.
    Returns:
      n [B, H, W, C] float32 in [-1, 1] units.
    """
    s = ops.cast(s, "float32")
    x01 = (ops.stop_gradient(ops.cast(x, "float32")) + 1.0) / 2.0
    return _eps_like(s, eps, seed) * s * x01 * 2.0


def poisson(s, x, eps=None, seed=None):
    """NR-GAN Poisson prior (Gaussian approximation, SD-NR-GAN-I).

    n = eps * s * sqrt(x01) * 2 with x01 = (x + 1) / 2 clipped to [0, 1] and
    x detached.

    Args:
      s: std map [B, H, W, C] float, [-1, 1] units.
      x: clean (or blurred) image [B, H, W, C] float in [-1, 1].
      eps: standard normal noise shaped like s; drawn if None.
      seed: optional stateless seed [2] int used when eps is None.
    Returns:
      n [B, H, W, C] float32 in [-1, 1] units.
    """
    s = ops.cast(s, "float32")
    x01 = (ops.stop_gradient(ops.cast(x, "float32")) + 1.0) / 2.0
    x01 = ops.clip(x01, 0.0, 1.0)
    return _eps_like(s, eps, seed) * s * ops.sqrt(x01) * 2.0


def camera(read, shot, x01, eps=None, seed=None, stop_gradient_x=True):
    """Our camera (read + shot, Brooks et al. 2019) prior, in [0, 1] units.

    n = eps * sqrt(read + shot * clip(x01, 0, 1)): heteroscedastic Gaussian
    with variance linear in the intensity, as `degradations.noise` simulates
    for the real data.

    Args:
      read: read-noise variance map a [B, H, W, C] float, > 0.
      shot: shot-noise variance coefficient map b [B, H, W, C] float, > 0.
      x01: image the noise is added to [B, H, W, C] float in **[0, 1]**.
      eps: standard normal noise shaped like read; drawn if None.
      seed: optional stateless seed [2] int used when eps is None.
      stop_gradient_x: detach x (NR-GAN SD-I convention, default) so the
        noise gives no gradient to G_x / G_k.
    Returns:
      n [B, H, W, C] float32 in **[0, 1] units**.
    """
    read = ops.cast(read, "float32")
    shot = ops.cast(shot, "float32")
    x01 = ops.cast(x01, "float32")
    if stop_gradient_x:
        x01 = ops.stop_gradient(x01)
    variance = read + shot * ops.clip(x01, 0.0, 1.0)
    return _eps_like(read, eps, seed) * ops.sqrt(variance)


def apply_prior(prior, maps, x=None, eps=None, seed=None):
    """Turns G_n's output dict into noise, in [-1, 1] units.

    Args:
      prior: one of `PRIORS`.
      maps: the dict returned by `NoiseGenerator` ("s", or "read"/"shot").
      x: image [B, H, W, C] float in **[-1, 1]** (unused by "none" and
        "additive_gaussian").
      eps: standard normal noise [B, H, W, C]; drawn if None.
      seed: optional stateless seed [2] int used when eps is None.
    Returns:
      n [B, H, W, C] float32 in [-1, 1] units (add to x in [-1, 1]; divide
      by 2 for [0, 1] units).
    """
    if prior == "none":
        return ops.cast(maps["s"], "float32")
    if prior == "additive_gaussian":
        return additive_gaussian(maps["s"], eps, seed)
    if prior == "multiplicative_gaussian":
        return multiplicative_gaussian(maps["s"], x, eps, seed)
    if prior == "poisson":
        return poisson(maps["s"], x, eps, seed)
    if prior == "camera":
        x01 = (ops.cast(x, "float32") + 1.0) / 2.0
        return 2.0 * camera(maps["read"], maps["shot"], x01, eps, seed)
    raise ValueError(f"unknown prior {prior!r}; choose one of {PRIORS}")


def random_noise_transforms(n, seed, rotation=False, channel_shuffle=False,
                            sign_flip=False):
    """NR-GAN's random noise transforms T (SI-NR-GAN-II, SD-NR-GAN-III).

    Per sample: rotation by k * 90 degrees, k uniform in {0, 1, 2, 3}, and a
    uniform random channel permutation; per (sample, channel): sign flip with
    p = 0.5. Applied in that order. Randomness is stateless from `seed`, so
    the result is a pure function of (n, seed) and works in tf.function.

    Args:
      n: noise [B, H, W, C] float (H == W if rotation); any units.
      seed: int tensor [2], a stateless RNG seed.
      rotation: apply the random rotation.
      channel_shuffle: apply the random channel permutation.
      sign_flip: apply the random per-channel sign flip.
    Returns:
      Transformed noise, same shape and dtype as n.
    """
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=3)
    n = tf.convert_to_tensor(n)
    batch = tf.shape(n)[0]
    channels = n.shape[-1] if n.shape[-1] is not None else tf.shape(n)[-1]
    if rotation:
        if (n.shape[1] is not None and n.shape[2] is not None
                and n.shape[1] != n.shape[2]):
            raise ValueError(f"rotation needs square maps, got {n.shape}")
        k = tf.random.stateless_uniform(
            [batch], seeds[0], minval=0, maxval=4, dtype=tf.int32)
        rotated = tf.stack([tf.image.rot90(n, i) for i in range(4)], axis=0)
        n = tf.gather(tf.transpose(rotated, [1, 0, 2, 3, 4]), k,
                      axis=1, batch_dims=1)
    if channel_shuffle:
        keys = tf.random.stateless_uniform([batch, channels], seeds[1])
        perm = tf.argsort(keys, axis=-1)
        n = tf.gather(n, perm, axis=3, batch_dims=1)
    if sign_flip:
        coin = tf.random.stateless_uniform([batch, 1, 1, channels], seeds[2])
        n = n * tf.cast(tf.where(coin < 0.5, -1.0, 1.0), n.dtype)
    return n


@keras.saving.register_keras_serializable(package="bncr_tf")
class NoiseGenerator(ImageGenerator):
    """G_n: latent z_n (and z_x if implicit) -> noise parameter maps.

    The G_x architecture (`ImageGenerator`, same blocks and init). Options:
      * prior in {"none", "additive_gaussian", "multiplicative_gaussian",
        "poisson"}: 3-channel tanh output s in [-1, 1] (NR-GAN).
      * prior "camera": 6 raw channels mapped (in float32) to read = exp(la)
        and shot = exp(lb), see the module docstring.
      * implicit (SD-NR-GAN-II/III): the Linear stem takes z_x_dim + z_dim
        inputs (256 at defaults, 1,464,835 parameters at 32 px). `call`
        accepts z_n of size z_dim (z_x is prepended) or of size
        z_x_dim + z_dim (its first z_x_dim entries are overwritten by z_x,
        as in NR-GAN). Both give the same network input.

    The prior itself (eps, x) is applied outside with `apply_prior` or the
    prior functions of this module.

    Args:
      resolution: output size R (power of two, >= 8).
      z_dim: size of the independent part of z_n.
      width: base channel count (128 in NR-GAN).
      channel_multipliers: per-stage multipliers (see `ImageGenerator`).
      prior: one of `PRIORS`.
      implicit: share z_x with G_x's latent (SD-NR-GAN-II/III).
      z_x_dim: size of z_x (used if implicit).
      residual_factor: residual branch scale (0.1).
      **kwargs: standard `keras.Model` arguments (name, dtype).

    Example:
      >>> g_n = NoiseGenerator(prior="camera")
      >>> maps = g_n(z_n)          # {"read": [B,32,32,3], "shot": [B,32,32,3]}
      >>> n = apply_prior("camera", maps, x, seed=seed)   # [-1, 1] units
    """

    def __init__(self, resolution=32, z_dim=128, width=128,
                 channel_multipliers=None, prior="additive_gaussian",
                 implicit=False, z_x_dim=128, residual_factor=0.1,
                 **kwargs):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of "
                             f"{PRIORS}")
        for key in ("out_channels", "output_activation"):
            kwargs.pop(key, None)
        camera_prior = prior == "camera"
        super().__init__(
            resolution=resolution, z_dim=z_dim, width=width,
            channel_multipliers=channel_multipliers,
            out_channels=6 if camera_prior else 3,
            output_activation="linear" if camera_prior else "tanh",
            residual_factor=residual_factor, **kwargs)
        self.prior = prior
        self.implicit = implicit
        self.z_x_dim = z_x_dim

    @property
    def input_dim(self):
        """Size of the stem input: z_x_dim + z_dim if implicit, else z_dim."""
        return self.z_dim + (self.z_x_dim if self.implicit else 0)

    def call(self, z_n, z_x=None):
        """Generates noise parameter maps.

        Args:
          z_n: [B, z_dim], or [B, z_x_dim + z_dim] if implicit.
          z_x: [B, z_x_dim], G_x's latent; required iff implicit.
        Returns:
          A dict of float32 maps [B, R, R, 3]: {"s": in [-1, 1]} for the
          NR-GAN priors, {"read": a > 0, "shot": b > 0} (variance
          coefficients in [0, 1] units; read in [1e-9, 1e-1], shot in
          [1e-6, 1e-1]) for "camera".
        """
        if self.implicit:
            if z_x is None:
                raise ValueError("an implicit NoiseGenerator needs z_x")
            if z_n.shape[-1] == self.input_dim:
                z_n = z_n[:, self.z_x_dim:]
            z = ops.concatenate([ops.cast(z_x, z_n.dtype), z_n], axis=-1)
        else:
            z = z_n
        raw = ops.cast(self.features(z), L.head_dtype(self))
        if self.prior != "camera":
            return {"s": ops.tanh(raw)}
        la = camera_log_variance(raw[..., :3], CAMERA_READ_RANGE,
                                 CAMERA_READ_INIT)
        lb = camera_log_variance(raw[..., 3:], CAMERA_SHOT_RANGE,
                                 CAMERA_SHOT_INIT)
        return {"read": ops.exp(la), "shot": ops.exp(lb)}

    def get_config(self):
        config = super().get_config()
        for key in ("out_channels", "output_activation"):
            config.pop(key, None)
        config.update(prior=self.prior, implicit=self.implicit,
                      z_x_dim=self.z_x_dim)
        return config
