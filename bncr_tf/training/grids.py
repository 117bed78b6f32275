"""Image grids for monitoring: reals and the x / k / n / y decomposition."""

import numpy as np
import tensorflow as tf

from bncr_tf import fileio
from bncr_tf import stages as stages_lib


def to_uint8(images):
    """[B, H, W, C] float in [-1, 1] -> uint8 [B, H, W, C]."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(images, cols):
    """Tiles uint8 [B, H, W, C] into one [rows*H, cols*W, C] image."""
    b, h, w, c = images.shape
    rows = -(-b // cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i in range(b):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return canvas


def kernels_to_images(kernels, size):
    """[B, K, K] unit-sum kernels -> uint8 [B, size, size, 3], peak = white.

    Each kernel is scaled by its own maximum and enlarged with nearest
    neighbours, so its shape (disk, motion path, delta) is visible.
    """
    k = np.asarray(kernels, np.float32)
    k = k / np.maximum(k.max(axis=(1, 2), keepdims=True), 1e-12)
    reps = max(size // k.shape[1], 1)
    k = np.kron(k, np.ones((1, reps, reps), np.float32))
    pad = size - k.shape[1]
    k = np.pad(k, ((0, 0), (pad // 2, pad - pad // 2),
                   (pad // 2, pad - pad // 2)))
    return np.repeat(np.rint(k[..., None] * 255).astype(np.uint8), 3, -1)


def noise_to_images(noise, scale=4.0):
    """Noise maps in [-1, 1] image units -> uint8, zero = mid grey.

    Noise is amplified by `scale` so camera noise of a few grey levels shows.
    """
    return to_uint8(np.clip(np.asarray(noise) * scale, -1.0, 1.0))


# How a stage's grid field is drawn (`stages.Stage.grid_field`).
_RENDER = {"k": kernels_to_images,
           "n": lambda noise, size: noise_to_images(noise)}


def decomposition_grid(synthesis, rows):
    """Stacks x | k | n | y column groups for `rows` samples: x, one column
    per stage that has a grid field (`stages.Stage.grid_field`), then y.

    Args:
      synthesis: dict with "x", "y" ([B, H, W, 3] in [-1, 1]) and optionally
        "k" ([B, K, K]) and "n" ([B, H, W, 3], image units in [-1, 1])
        (`stages.Synthesis.present()` as numpy).
      rows: number of samples to show (<= B).
    Returns:
      uint8 [rows*H, cols*W, 3] with one sample per row.
    """
    x = to_uint8(synthesis["x"][:rows])
    size = x.shape[1]
    columns = [x]
    for stage in stages_lib.STAGES:
        field = stage.grid_field
        if field is not None and synthesis.get(field) is not None:
            columns.append(_RENDER[field](synthesis[field][:rows], size))
    columns.append(to_uint8(synthesis["y"][:rows]))
    stacked = np.stack(columns, axis=1).reshape((-1,) + x.shape[1:])
    return tile(stacked, len(columns))


def write_png(path, image):
    """Writes uint8 [H, W, 3] as PNG atomically (temp file + rename)."""
    fileio.atomic_write_bytes(path, tf.io.encode_png(image).numpy())
