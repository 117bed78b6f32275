"""Camera noise of Brooks et al. (2019), "the setting of [7]" in BNCR-GAN.

The model (spec `degradations.md` section 3) is heteroscedastic Gaussian
noise whose variance is affine in the signal:

        y = x + n,   n ~ N(0, read + shot * x)   per pixel and channel,

with one (shot, read) pair per image drawn as

        log shot ~ U[ln 1e-4, ln 1.2e-2]
        log read = 2.18 * log shot + 1.20 + N(0, 0.26^2).

`shot` and `read` are *variance* coefficients despite Brooks' names
(`shot_noise`, `read_noise`). Following the spec, the model is applied
directly to the sRGB image in [0, 1] (no unprocessing), and the result is
clipped to [0, 1].

The generator-side (AmbientGAN) form is reparameterised,
`n = eps * sqrt(max(read + shot * x, 0))` with `eps ~ N(0, I)`, so it is
differentiable in `x`.

All functions here are pure: numpy samplers take an explicit
`numpy.random.Generator`, TF samplers take a stateless seed (int tensor
`[2]`), and nothing reads global random state.
"""

import math

import numpy as np
import tensorflow as tf

# Brooks et al. 2019 (google-research `unprocessing`, `random_noise_levels`).
LOG_MIN_SHOT = math.log(1e-4)
LOG_MAX_SHOT = math.log(1.2e-2)
READ_SLOPE = 2.18
READ_INTERCEPT = 1.20
READ_LOG_STD = 0.26


def camera_noise_levels(rng, size=None):
    """Draws Brooks et al. noise levels with numpy.

    Draw order (part of the reproducibility contract): first the uniform
    log-shot values (`rng.uniform`, `size` of them), then the Gaussian
    read-noise offsets (`rng.normal`, `size` of them).

    Args:
        rng: a `numpy.random.Generator`.
        size: None for one pair of Python-float-like numpy scalars, or an int /
            shape for arrays of that shape.

    Returns:
        `(shot, read)`: variance coefficients, float64 (scalars if `size` is
        None, else arrays of shape `size`). `shot` lies in [1e-4, 1.2e-2];
        `read` is log-normal around `exp(1.2) * shot**2.18`.
    """
    log_shot = rng.uniform(LOG_MIN_SHOT, LOG_MAX_SHOT, size=size)
    log_read = (READ_SLOPE * log_shot + READ_INTERCEPT
                + rng.normal(0.0, READ_LOG_STD, size=size))
    return np.exp(log_shot), np.exp(log_read)


def sample_camera_noise_levels(batch, seed):
    """Draws Brooks et al. noise levels with stateless TF random ops.

    Usable inside `tf.function`; the output depends only on `batch` and
    `seed`. Same distribution as `camera_noise_levels` (not the same numbers).

    Args:
        batch: int or scalar int tensor, number of images B.
        seed: int tensor `[2]` (int32 or int64), a stateless seed.

    Returns:
        `(shot, read)`: float32 tensors `[B]`, variance coefficients.
    """
    seeds = tf.random.experimental.stateless_split(
            tf.cast(seed, tf.int64), num=2)
    log_shot = tf.random.stateless_uniform(
            [batch], seed=seeds[0], minval=LOG_MIN_SHOT, maxval=LOG_MAX_SHOT,
            dtype=tf.float32)
    log_read = (READ_SLOPE * log_shot + READ_INTERCEPT
                + READ_LOG_STD * tf.random.stateless_normal(
                    [batch], seed=seeds[1], dtype=tf.float32))
    return tf.exp(log_shot), tf.exp(log_read)


def _per_image(v, images):
    """Reshapes a scalar or `[B]` tensor so it broadcasts against images."""
    v = tf.convert_to_tensor(v, dtype=images.dtype)
    if v.shape.rank == 0:
        return v
    return tf.reshape(v, [-1, 1, 1, 1])


def _safe_sqrt(v):
    """sqrt(max(v, 0)) whose gradient is 0 (not inf/NaN) where v <= 0."""
    positive = v > 0
    safe = tf.where(positive, v, tf.ones_like(v))
    return tf.where(positive, tf.sqrt(safe), tf.zeros_like(v))


def camera_noise(images, shot, read, eps):
    """Reparameterised camera noise `n = eps * sqrt(max(read + shot*x, 0))`.

    Differentiable in `images` (and in `shot`, `read`); the square-root
    gradient is guarded so it stays finite where the variance is 0.

    Args:
        images: `[B, H, W, C]` float32 in [0, 1], the (blurred) clean image x.
        shot: scalar or `[B]` float, shot variance coefficient per image.
        read: scalar or `[B]` float, read variance coefficient per image.
        eps: `[B, H, W, C]` float32 standard normal draws.

    Returns:
        `[B, H, W, C]` float32 noise n (not added, not clipped).
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    eps = tf.convert_to_tensor(eps, dtype=tf.float32)
    variance = _per_image(read, images) + _per_image(shot, images) * images
    return eps * _safe_sqrt(variance)


def add_camera_noise(images, shot, read, eps=None, seed=None, clip=True):
    """Adds camera noise: `y = clip(x + camera_noise(x, shot, read, eps))`.

    Args:
        images: `[B, H, W, C]` float32 in [0, 1].
        shot: scalar or `[B]` float, shot variance coefficient per image.
        read: scalar or `[B]` float, read variance coefficient per image.
        eps: optional `[B, H, W, C]` float32 standard normal draws. If None,
            they are drawn with `tf.random.stateless_normal(shape, seed)`.
        seed: int tensor `[2]`; required when `eps` is None.
        clip: clip the result to [0, 1] (the data-side convention). Note that
            `tf.clip_by_value` has zero gradient on saturated pixels.

    Returns:
        `[B, H, W, C]` float32 noisy image (in [0, 1] if `clip`).

    Raises:
        ValueError: if both `eps` and `seed` are None.
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if eps is None:
        if seed is None:
            raise ValueError("add_camera_noise needs eps or a stateless seed")
        eps = tf.random.stateless_normal(tf.shape(images), seed=seed,
                                         dtype=tf.float32)
    y = images + camera_noise(images, shot, read, eps)
    if clip:
        y = tf.clip_by_value(y, 0.0, 1.0)
    return y
