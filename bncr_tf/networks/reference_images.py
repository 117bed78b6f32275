"""Degradation calibration: real clean images in place of G_x.

With `--clean_reference`, G_x is replaced by `ReferenceImages`, which
"generates" a uniformly drawn image of a clean reference set: image
floor(Phi(z_x[:, 0]) * N) for a standard normal z_x (Phi is the normal CDF).
Only G_k, G_n, G_q and D train, so the degradation generators learn the
degradation that maps clean images of the domain to the degraded training
images (e.g. to synthesise restoration training pairs).
"""

import keras
import numpy as np
import tensorflow as tf


class ReferenceImages(keras.Model):
    """A non-trainable G_x that samples clean reference images.

    The images live in a plain tf.Variable outside Keras' weight list, so
    they are neither trained nor written into checkpoints (the run's config
    names the reference set, which is reloaded on resume).

    Args:
      images: uint8 [N, R, R, 3] clean images.
      **kwargs: standard `keras.Model` arguments.
    Returns (call):
      [B, R, R, 3] float32 in [-1, 1): (u8 + 0.5) / 128 - 1, the centre
      of the dequantisation interval of the training data.
    """

    def __init__(self, images, **kwargs):
        super().__init__(**kwargs)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("ReferenceImages needs uint8 [N, R, R, 3]")
        self.count = len(images)
        # Kept in a list so neither Keras nor tf.train tracks it.
        self._store = [tf.Variable(images, trainable=False,
                                   name="reference_images")]

    def call(self, z_x):
        z = tf.cast(z_x[:, 0], tf.float32)
        u = 0.5 * (1.0 + tf.math.erf(z / np.sqrt(2.0)))
        idx = tf.clip_by_value(tf.cast(u * self.count, tf.int32), 0,
                               self.count - 1)
        u8 = tf.gather(self._store[0], idx)
        return (tf.cast(u8, tf.float32) + 0.5) / 128.0 - 1.0
