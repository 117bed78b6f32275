"""D: the ResNet discriminator of NR-GAN, generalised to any resolution."""

import keras
import numpy as np
from keras import ops

from bncr_tf.networks import layers as L


HIGHPASS_TAPS = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]],
                         np.float32) / 4.0


def highpass_residual(y):
    """Per-channel 3x3 high-pass of images [B, H, W, C] (zero padding).

    The filter `HIGHPASS_TAPS` (a second-order residual used in image
    forensics) sums to zero, so flat regions map to 0 and what remains is
    texture, edges, JPEG blocking and ringing, and noise.
    """
    channels = y.shape[-1]
    kernel = np.tile(HIGHPASS_TAPS[:, :, None, None], (1, 1, channels, 1))
    return ops.depthwise_conv(y, ops.cast(kernel, y.dtype), 1,
                              padding="same")


JPEG_BLOCK = 8


def block_grid_differences(y, block=JPEG_BLOCK):
    """Neighbour differences of the luma, split at the JPEG block grid.

    JPEG quantises each 8x8 block on its own, so compression raises the
    jumps across block boundaries (columns/rows 8i - 1 -> 8i) relative to
    the jumps inside blocks. A convolutional D with global pooling does
    not know where the grid is; these four maps tell it:

      |dx| on boundary columns, |dx| elsewhere,
      |dy| on boundary rows,    |dy| elsewhere,

    each zero where the other is not, with dx[.., j] = Y[.., j + 1] -
    Y[.., j] (0 in the last column) and Y the channel mean. The ratio of
    the boundary and the other jumps, averaged, is the blockiness of
    `bncr_tf.metrics.degradation_stats` (there on the BT.601 luma).

    Args:
      y: images [B, H, W, C].
      block: the grid period (8 for JPEG).
    Returns:
      [B, H, W, 4] in y's dtype.
    """
    lum = ops.mean(y, axis=-1, keepdims=True)
    dx = ops.abs(ops.pad(lum[:, :, 1:] - lum[:, :, :-1],
                         [[0, 0], [0, 0], [0, 1], [0, 0]]))
    dy = ops.abs(ops.pad(lum[:, 1:] - lum[:, :-1],
                         [[0, 0], [0, 1], [0, 0], [0, 0]]))
    h, w = y.shape[1], y.shape[2]
    col = (np.arange(w) % block == block - 1).astype(np.float32)
    row = (np.arange(h) % block == block - 1).astype(np.float32)
    col = ops.cast(col.reshape(1, 1, w, 1), y.dtype)
    row = ops.cast(row.reshape(1, h, 1, 1), y.dtype)
    return ops.concatenate(
        [dx * col, dx * (1 - col), dy * row, dy * (1 - row)], axis=-1)


@keras.saving.register_keras_serializable(package="bncr_tf")
class Discriminator(keras.Model):
    """D_y: image -> real/fake logit, NR-GAN's ResNet discriminator.

    Architecture (NHWC), for input size R:
      * optimized first block on the image, R -> R/2, C_R channels;
      * one downsampling `DownBlock` per further halving until 8x8; the block
        whose input has size r outputs C_r channels;
      * two non-resampling blocks at 8x8 with identity shortcuts;
      * ReLU, global mean pooling, Linear -> 1.
    C_r = `width * channel_multipliers[r]`, the same schedule as
    `ImageGenerator` (entries for sizes 4 and 8 are unused, the 8x8 blocks
    keep C_16). At 32 px with width 128 this is exactly NR-GAN's D
    (1,053,825 parameters). No normalisation.

    Logits are float32 whatever the dtype policy (the head's output is cast;
    float64 only under a float64 policy);
    inputs may be float32 under a mixed policy (Keras casts them).

    Args:
      resolution: input size R (power of two, >= 16).
      width: base channel count (128 in NR-GAN).
      channel_multipliers: per-stage multipliers of `width` for stage sizes
        4, 8, ..., R; None for the default schedule.
      in_channels: input channels (3 for RGB images).
      residual_factor: residual branch scale (0.1).
      highpass: 0 (NR-GAN's D) or a scale s > 0: D then sees
        concat(y, s * HP(y)), where HP is a fixed per-channel 3x3
        high-pass filter ([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]] / 4, zero
        padding), so the first block has 2 * in_channels inputs. A
        [choice] outside the paper: it exposes JPEG blocking and ringing,
        which NR-GAN's D does not pick up in short runs
        (docs/results.md).
      block_grid: 0 (NR-GAN's D) or a scale s > 0: D also sees s times
        the four maps of `block_grid_differences` (luma jumps on and off
        the 8x8 JPEG grid), four more inputs of the first block. A
        [choice] outside the paper, off by default: a convolutional D
        with global pooling cannot locate the grid; measured not to help
        while R1 = 10 (docs/results.md, Experiment 3, "Why D is blind").
      **kwargs: standard `keras.Model` arguments (name, dtype).

    Example:
      >>> d = Discriminator(resolution=32)
      >>> logits = d(keras.random.uniform((4, 32, 32, 3), -1, 1))   # [4]
    """

    def __init__(self, resolution=32, width=128, channel_multipliers=None,
                 in_channels=3, residual_factor=L.RESIDUAL_FACTOR,
                 highpass=0.0, block_grid=0.0, **kwargs):
        super().__init__(**kwargs)
        L.check_resolution(resolution, 16)
        self.resolution = resolution
        self.width = width
        self.channel_multipliers = (
            None if channel_multipliers is None
            else tuple(float(m) for m in channel_multipliers))
        self.in_channels = in_channels
        self.residual_factor = residual_factor
        if highpass < 0:
            raise ValueError(f"highpass must be >= 0, got {highpass}")
        self.highpass = float(highpass)
        if block_grid < 0:
            raise ValueError(f"block_grid must be >= 0, got {block_grid}")
        self.block_grid = float(block_grid)
        self.channels = L.stage_channels(resolution, width,
                                         self.channel_multipliers)
        policy = self.dtype_policy

        # === Layers ===
        down_sizes = [r for r in L.stage_resolutions(resolution) if r >= 16]
        blocks = []
        for r in reversed(down_sizes):
            blocks.append(L.DownBlock(
                self.channels[r], first=(r == resolution), downsample=True,
                residual_factor=residual_factor, dtype=policy,
                name=f"down_{r}"))
        for i in range(2):
            blocks.append(L.DownBlock(
                self.channels[16], first=False, downsample=False,
                residual_factor=residual_factor, dtype=policy,
                name=f"plain_8_{i}"))
        self.blocks = blocks
        self.head = L.dense(1, dtype=policy, name="head")

    @property
    def input_channels(self):
        """Channels of the first block's input (the image and the
        optional high-pass and block-grid maps)."""
        return (self.in_channels * (2 if self.highpass else 1)
                + (4 if self.block_grid else 0))

    def build(self, input_shape=None):
        if self.built:
            return
        r = self.resolution
        shape = (None, r, r, self.input_channels)
        for block in self.blocks:
            L.build_layer(block, shape)
            shape = block.compute_output_shape(shape)
        L.build_layer(self.head, (None, shape[-1]))
        self.built = True

    def call(self, y, maps_constant=False):
        """Scores images.

        Args:
          y: images [B, R, R, in_channels], float in [-1, 1].
          maps_constant: compute the high-pass and block-grid maps from a
            stop-gradient copy of y. The logits are unchanged; only the
            input gradient changes: it then flows through the image
            channels alone (R1 on the image only, `--r1_inputs=image`).
        Returns:
          logits [B] float32 (float64 under a float64 policy).
        """
        parts = [y]
        y_maps = ops.stop_gradient(y) if maps_constant else y
        if self.highpass:
            parts.append(self.highpass * highpass_residual(y_maps))
        if self.block_grid:
            parts.append(self.block_grid * block_grid_differences(y_maps))
        h = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        for block in self.blocks:
            h = block(h)
        h = ops.mean(ops.relu(h), axis=(1, 2))
        logits = ops.cast(self.head(h), L.head_dtype(self))
        return ops.squeeze(logits, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            resolution=self.resolution, width=self.width,
            channel_multipliers=self.channel_multipliers,
            in_channels=self.in_channels,
            residual_factor=self.residual_factor, highpass=self.highpass,
            block_grid=self.block_grid)
        return config
