"""P-AmbientGAN: degradation parameters learned directly, without a generator.

The paper's P-AmbientGAN baseline (section 7.2) learns one blur kernel, one
noise level and one quality factor shared by every image. These models have
the same call signatures and output dicts as G_k, G_n (camera prior) and G_q,
so the synthesis function treats them alike; the latent only sets the batch.
"""

import math

import keras
from keras import ops

from bncr_tf.networks import noise_generator as noise_lib

CENTRE_LOGIT = 4.0  # initial kernel: softmax puts ~half its mass on the centre


@keras.saving.register_keras_serializable(package="bncr_tf")
class ParamKernel(keras.Model):
    """One learned blur kernel k = softmax(w) for all images.

    Args:
      kernel_size: K, odd.
      **kwargs: standard `keras.Model` arguments.
    Returns (call):
      {"k", "k_hat": [B, K, K] unit sum, "m_k": ones [B, K, K]} float32.
    """

    def __init__(self, kernel_size=7, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        taps = kernel_size * kernel_size
        init = [0.0] * taps
        init[taps // 2] = CENTRE_LOGIT
        self.logits = self.add_weight(
            shape=(taps,), initializer=keras.initializers.Constant(init),
            name="logits", dtype="float32")

    def call(self, z_k):
        batch = ops.shape(z_k)[0]
        k = ops.reshape(ops.softmax(self.logits), (1, self.kernel_size,
                                                   self.kernel_size))
        k = ops.repeat(k, batch, axis=0)
        return {"k": k, "k_hat": k, "m_k": ops.ones_like(k)}

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="bncr_tf")
class ParamQuality(keras.Model):
    """One learned JPEG quality q = 100 sigmoid(w) for all images.

    Args:
      q_init: initial quality in (0, 100).
      **kwargs: standard `keras.Model` arguments.
    Returns (call):
      {"q": [B] in [0, 100], "m_q": ones [B]} float32.
    """

    def __init__(self, q_init=90.0, **kwargs):
        super().__init__(**kwargs)
        self.q_init = q_init
        self.logit = self.add_weight(
            shape=(), name="logit", dtype="float32",
            initializer=keras.initializers.Constant(
                math.log(q_init / (100.0 - q_init))))

    def call(self, z_q):
        q = 100.0 * ops.sigmoid(self.logit) * ops.ones((ops.shape(z_q)[0],))
        return {"q": q, "m_q": ops.ones_like(q)}

    def get_config(self):
        config = super().get_config()
        config.update(q_init=self.q_init)
        return config


@keras.saving.register_keras_serializable(package="bncr_tf")
class ParamNoise(keras.Model):
    """One learned camera-noise level (read, shot) for all images.

    Uses the same bounded log parameterisation as G_n's camera prior.

    Args:
      resolution: image size R of the noise maps.
      **kwargs: standard `keras.Model` arguments.
    Returns (call):
      {"read", "shot": [B, R, R, 3] float32 > 0} (constant maps).
    """

    def __init__(self, resolution=32, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        self.raw = self.add_weight(shape=(2,), initializer="zeros",
                                   name="raw", dtype="float32")

    def call(self, z_n, z_x=None):
        del z_x
        batch = ops.shape(z_n)[0]
        la = noise_lib.camera_log_variance(
            self.raw[0], noise_lib.CAMERA_READ_RANGE,
            noise_lib.CAMERA_READ_INIT)
        lb = noise_lib.camera_log_variance(
            self.raw[1], noise_lib.CAMERA_SHOT_RANGE,
            noise_lib.CAMERA_SHOT_INIT)
        ones = ops.ones((batch, self.resolution, self.resolution, 3))
        return {"read": ops.exp(la) * ones, "shot": ops.exp(lb) * ones}

    def get_config(self):
        config = super().get_config()
        config.update(resolution=self.resolution)
        return config
