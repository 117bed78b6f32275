"""G_x: the ResNet image generator of NR-GAN, generalised to any resolution."""

import keras
from keras import ops

from bncr_tf.networks import layers as L

OUTPUT_ACTIVATIONS = ("tanh", "linear")


@keras.saving.register_keras_serializable(package="bncr_tf")
class ImageGenerator(keras.Model):
    """G_x: latent z -> image, NR-GAN's ResNet generator.

    Architecture (NHWC): Linear z_dim -> C_4 * 4 * 4, reshape to
    [B, 4, 4, C_4], then one `UpBlock` per doubling up to `resolution`
    (3 blocks at 32 px, 5 at 128 px), ReLU, 3x3 conv -> `out_channels`, tanh.
    C_r is the channel count of stage size r: `width * channel_multipliers`
    (see `layers.default_channel_multipliers`). No normalisation. At 32 px
    with width 128 this is exactly NR-GAN's G (1,202,691 parameters).

    The output head runs in float32 whatever the dtype policy (float64 only
    under a float64 policy): the last conv's output is cast to float32
    before the activation, and the result is float32.

    Args:
      resolution: output size R (power of two, >= 8).
      z_dim: latent size.
      width: base channel count (128 in NR-GAN).
      channel_multipliers: per-stage multipliers of `width` for stage sizes
        4, 8, ..., R; None for the default schedule.
      out_channels: output channels (3 for images).
      output_activation: "tanh" (outputs in [-1, 1]) or "linear".
      residual_factor: residual branch scale (0.1).
      **kwargs: standard `keras.Model` arguments (name, dtype).

    Example:
      >>> g_x = ImageGenerator(resolution=32, width=128)
      >>> x = g_x(keras.random.normal((4, 128)))   # [4, 32, 32, 3] in [-1, 1]
    """

    def __init__(self, resolution=32, z_dim=128, width=128,
                 channel_multipliers=None, out_channels=3,
                 output_activation="tanh",
                 residual_factor=L.RESIDUAL_FACTOR, **kwargs):
        super().__init__(**kwargs)
        L.check_resolution(resolution, 8)
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got "
                f"{output_activation!r}")
        self.resolution = resolution
        self.z_dim = z_dim
        self.width = width
        self.channel_multipliers = (
            None if channel_multipliers is None
            else tuple(float(m) for m in channel_multipliers))
        self.out_channels = out_channels
        self.output_activation = output_activation
        self.residual_factor = residual_factor
        self.channels = L.stage_channels(resolution, width,
                                         self.channel_multipliers)
        policy = self.dtype_policy

        # === Layers ===
        c4 = self.channels[4]
        self.stem = L.dense(4 * 4 * c4, dtype=policy, name="stem")
        self.blocks = [
            L.UpBlock(self.channels[r], residual_factor, dtype=policy,
                      name=f"up_{r}")
            for r in L.stage_resolutions(resolution)[1:]]
        self.head = L.conv2d(out_channels, 3, 1.0, policy, "head")

    @property
    def input_dim(self):
        """Size of the latent that `call` expects."""
        return self.z_dim

    def build(self, input_shape=None):
        if self.built:
            return
        L.build_layer(self.stem, (None, self.input_dim))
        shape = (None, 4, 4, self.channels[4])
        for block in self.blocks:
            L.build_layer(block, shape)
            shape = block.compute_output_shape(shape)
        L.build_layer(self.head, shape)
        self.built = True

    def features(self, z):
        """Raw head output [B, R, R, out_channels] in the compute dtype."""
        h = self.stem(z)
        h = ops.reshape(h, (-1, 4, 4, self.channels[4]))
        for block in self.blocks:
            h = block(h)
        return self.head(ops.relu(h))

    def call(self, z):
        """Generates images.

        Args:
          z: latents [B, z_dim], float.
        Returns:
          [B, R, R, out_channels] float32 (float64 under a float64
          policy); in [-1, 1] for tanh output.
        """
        h = ops.cast(self.features(z), L.head_dtype(self))
        if self.output_activation == "tanh":
            h = ops.tanh(h)
        return h

    def get_config(self):
        config = super().get_config()
        config.update(
            resolution=self.resolution, z_dim=self.z_dim, width=self.width,
            channel_multipliers=self.channel_multipliers,
            out_channels=self.out_channels,
            output_activation=self.output_activation,
            residual_factor=self.residual_factor)
        return config
