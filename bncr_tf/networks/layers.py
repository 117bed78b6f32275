"""Residual blocks, initialisers and the channel schedule shared by G and D.

The blocks follow NR-GAN's ResNet (itself derived from Mescheder et al.
2018): pre-activation ReLU, 3x3 convolutions, nearest 2x upsampling in G,
2x2 mean pooling in D, no normalisation, and a fixed residual factor of 0.1
(output = shortcut + 0.1 * residual). Tensors are NHWC.

Initialisation: Xavier-uniform with gain sqrt(2) on residual-path
convolutions and gain 1 everywhere else (shortcuts, stems, heads); all biases
zero. Keras' `VarianceScaling(scale=gain**2, mode="fan_avg",
distribution="uniform")` is exactly Xavier-uniform with that gain.
"""

import math

import keras
import tensorflow as tf
from keras import ops

RESIDUAL_FACTOR = 0.1
RESIDUAL_GAIN = math.sqrt(2.0)


def xavier_uniform(gain=1.0):
    """Returns a Xavier (Glorot) uniform initializer with the given gain."""
    return keras.initializers.VarianceScaling(
        scale=gain ** 2, mode="fan_avg", distribution="uniform")


def conv2d(filters, kernel_size, gain, dtype=None, name=None):
    """A 'same'-padded (zero padding) stride-1 convolution with NR-GAN init."""
    return keras.layers.Conv2D(
        filters, kernel_size, padding="same",
        kernel_initializer=xavier_uniform(gain), bias_initializer="zeros",
        dtype=dtype, name=name)


def dense(units, gain=1.0, bias_initializer="zeros", dtype=None, name=None):
    """A fully connected layer with Xavier-uniform init and zero bias."""
    return keras.layers.Dense(
        units, kernel_initializer=xavier_uniform(gain),
        bias_initializer=bias_initializer, dtype=dtype, name=name)


def build_layer(layer, input_shape):
    """Builds `layer` for `input_shape` unless it is already built."""
    if not layer.built:
        layer.build(input_shape)


def head_dtype(layer):
    """dtype of network outputs: float32, or float64 under a float64 policy.

    Mixed policies (float16 / bfloat16 compute) always give float32 outputs.
    """
    return "float64" if layer.compute_dtype == "float64" else "float32"


def stage_resolutions(resolution):
    """Feature-map sizes 4, 8, ..., resolution of the ResNet stages."""
    return [4 * 2 ** i for i in range(int(math.log2(resolution // 4)) + 1)]


def check_resolution(resolution, minimum):
    """Raises ValueError unless `resolution` is a power of two >= minimum."""
    if (not isinstance(resolution, int) or resolution < minimum
            or resolution & (resolution - 1)):
        raise ValueError(
            f"resolution must be a power of two >= {minimum}, got "
            f"{resolution!r}")


def default_channel_multipliers(resolution):
    """Default channel schedule: flat up to 32x32, halved per doubling above.

    Entry i is the multiplier of `width` at the stage of size 4 * 2**i. At
    32 px this gives (1, 1, 1, 1), i.e. NR-GAN's all-`width` network; at
    128 px (1, 1, 1, 1, 0.5, 0.25). The halving above 32 px is the pattern of
    Mescheder et al. 2018 (channels double each time the resolution halves).

    Args:
      resolution: output (G) or input (D) image size, a power of two.
    Returns:
      A tuple of floats, one per stage resolution 4, 8, ..., resolution.
    """
    return tuple(min(1.0, 32.0 / r) for r in stage_resolutions(resolution))


def stage_channels(resolution, width, channel_multipliers=None):
    """Channels per stage resolution: {r: max(1, round(width * mult))}."""
    resolutions = stage_resolutions(resolution)
    if channel_multipliers is None:
        channel_multipliers = default_channel_multipliers(resolution)
    if len(channel_multipliers) != len(resolutions):
        raise ValueError(
            f"channel_multipliers needs {len(resolutions)} entries (stage "
            f"sizes {resolutions}), got {len(channel_multipliers)}")
    return {r: max(1, int(round(width * m)))
            for r, m in zip(resolutions, channel_multipliers)}


def nearest_upsample(dtype=None, name=None):
    """2x nearest-neighbour upsampling ([B, H, W, C] -> [B, 2H, 2W, C])."""
    return keras.layers.UpSampling2D(
        size=2, interpolation="nearest", dtype=dtype, name=name)


def mean_pool(dtype=None, name=None):
    """2x2 mean pooling, stride 2 ([B, H, W, C] -> [B, H/2, W/2, C])."""
    return keras.layers.AveragePooling2D(
        pool_size=2, strides=2, dtype=dtype, name=name)


def _shift_sum(kernel):
    """Sum of a [3, 3, I, O] kernel shifted to the 4 corners of 4 x 4.

    Per spatial axis [w0, w1, w2] becomes [w0, w0 + w1, w1 + w2, w2]: the
    taps of a 3x3 kernel seen through a 2x nearest upsampling (reversed) or
    followed by a 2x2 mean pooling (divided by 4). Runs in float32.
    """
    kernel = ops.cast(kernel, "float32")
    total = None
    for a in (0, 1):
        for b in (0, 1):
            shifted = tf.pad(kernel, [[a, 1 - a], [b, 1 - b], [0, 0], [0, 0]])
            total = shifted if total is None else total + shifted
    return total


def upsample_conv3x3(x, kernel, bias):
    """conv3x3_same(nearest_upsample_2x(x)) as one stride-2 4x4 transposed
    convolution (same values up to float rounding, 2.25x fewer MACs).

    Output pixel (2i + a, 2j + b) sees input rows i - 1, i (a = 0) or
    i, i + 1 (a = 1), with the 3x3 taps summed per input pixel; that is a
    transposed convolution with the kernel `_shift_sum(kernel)` reversed.

    Args:
      x: [B, H, W, I] in the compute dtype.
      kernel: the 3x3 conv's kernel [3, 3, I, O] (float32 variable).
      bias: its bias [O].
    Returns:
      [B, 2H, 2W, O] in x's dtype.
    """
    k = tf.reverse(_shift_sum(kernel), [0, 1])
    k = tf.cast(tf.transpose(k, [0, 1, 3, 2]), x.dtype)   # [4, 4, O, I]
    shape = tf.shape(x)
    out = tf.nn.conv2d_transpose(
        x, k, tf.stack([shape[0], 2 * shape[1], 2 * shape[2],
                        kernel.shape[-1]]), 2, "SAME")
    return tf.nn.bias_add(out, tf.cast(bias, x.dtype))


def conv3x3_meanpool(x, kernel, bias):
    """mean_pool_2x2(conv3x3_same(x)) as one stride-2 4x4 convolution
    (same values up to float rounding, 2.25x fewer MACs).

    Args:
      x: [B, 2H, 2W, I] in the compute dtype.
      kernel: the 3x3 conv's kernel [3, 3, I, O] (float32 variable).
      bias: its bias [O].
    Returns:
      [B, H, W, O] in x's dtype.
    """
    k = tf.cast(0.25 * _shift_sum(kernel), x.dtype)
    out = tf.nn.conv2d(x, k, 2, "SAME")
    return tf.nn.bias_add(out, tf.cast(bias, x.dtype))


def conv1x1(x, kernel, bias):
    """A 1x1 convolution as one matrix product (same values; oneDNN's
    matmul is 1.4-3x faster than its 1x1 convolution here, forward plus
    backward, most for 3 input channels).

    Args:
      x: [B, H, W, I] in the compute dtype.
      kernel: the 1x1 conv's kernel [1, 1, I, O] (float32 variable).
      bias: its bias [O].
    Returns:
      [B, H, W, O] in x's dtype.
    """
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    shape = tf.shape(x)
    out = tf.matmul(tf.reshape(x, [-1, c_in]),
                    tf.cast(tf.reshape(kernel, [c_in, c_out]), x.dtype))
    out = tf.nn.bias_add(out, tf.cast(bias, x.dtype))
    return tf.reshape(out, tf.concat([shape[:3], [c_out]], 0))


@keras.saving.register_keras_serializable(package="bncr_tf")
class UpBlock(keras.layers.Layer):
    """G residual block with 2x nearest upsampling.

    Residual: ReLU, up, 3x3 conv (C_in -> C_out), ReLU, 3x3 conv.
    Shortcut: 1x1 conv (always learnable, as in NR-GAN), up.
    Output: shortcut + residual_factor * residual.

    NR-GAN upsamples before the shortcut conv; a 1x1 conv commutes with
    nearest upsampling, so convolving first gives the same values with 4x
    fewer multiply-adds. It also avoids a TensorFlow grappler "remapper"
    failure (Conv2D + BiasAdd + Add fusion chained across blocks). The
    residual's up + 3x3 conv runs as one stride-2 transposed convolution
    (`upsample_conv3x3`, same weights and values, 2.25x fewer MACs) and the
    1x1 shortcut conv as a matrix product (`conv1x1`).

    Args:
      filters: output channels C_out.
      residual_factor: fixed scale of the residual branch (0.1).
      **kwargs: standard `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, filters, residual_factor=RESIDUAL_FACTOR, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.residual_factor = residual_factor
        policy = self.dtype_policy
        self.up = nearest_upsample(dtype=policy, name="up")
        self.conv1 = conv2d(filters, 3, RESIDUAL_GAIN, policy, "conv1")
        self.conv2 = conv2d(filters, 3, RESIDUAL_GAIN, policy, "conv2")
        self.shortcut = conv2d(filters, 1, 1.0, policy, "shortcut")

    def build(self, input_shape):
        if self.built:
            return
        b, h, w, c = input_shape
        up_shape = (b, None if h is None else 2 * h,
                    None if w is None else 2 * w, c)
        build_layer(self.conv1, up_shape)
        build_layer(self.conv2, up_shape[:3] + (self.filters,))
        build_layer(self.shortcut, up_shape)

    def call(self, x):
        # conv1(up(.)) as one transposed conv: same values, 2.25x fewer MACs.
        h = upsample_conv3x3(ops.relu(x), self.conv1.kernel, self.conv1.bias)
        h = self.conv2(ops.relu(h))
        # 1x1 conv before the upsampling: same values, 4x fewer MACs.
        shortcut = conv1x1(x, self.shortcut.kernel, self.shortcut.bias)
        return self.up(shortcut) + self.residual_factor * h

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h,
                None if w is None else 2 * w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters,
                      residual_factor=self.residual_factor)
        return config


@keras.saving.register_keras_serializable(package="bncr_tf")
class DownBlock(keras.layers.Layer):
    """D residual block, optionally with 2x2 mean pooling.

    Three kinds, selected by the arguments:
      * first=True ("optimized" first block, always downsamples):
        residual conv(C_in -> C_out), ReLU, conv, pool (no leading ReLU);
        shortcut pool, then 1x1 conv (as NR-GAN).
      * first=False, downsample=True:
        residual ReLU, conv(C_in -> C_in), ReLU, conv(C_in -> C_out), pool;
        shortcut 1x1 conv, then pool (computed as pool, then 1x1 conv: both
        maps are linear and commute, so only float rounding differs, with
        4x fewer multiply-adds).
      * first=False, downsample=False (needs C_in == C_out):
        residual ReLU, conv, ReLU, conv; identity shortcut.
    Output: shortcut + residual_factor * residual. In the downsampling
    kinds the residual's last conv and the pooling run as one stride-2
    convolution (`conv3x3_meanpool`, same weights and values, 2.25x fewer
    MACs), and the 1x1 shortcut conv runs as a matrix product (`conv1x1`).

    Args:
      filters: output channels C_out.
      first: whether this is the optimized first block on the image.
      downsample: whether to mean-pool by 2 (ignored if first=True).
      residual_factor: fixed scale of the residual branch (0.1).
      **kwargs: standard `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, filters, first=False, downsample=True,
                 residual_factor=RESIDUAL_FACTOR, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.first = first
        self.downsample = downsample or first
        self.residual_factor = residual_factor
        policy = self.dtype_policy
        self.pool = mean_pool(dtype=policy, name="pool")
        self.conv1 = None
        self.conv2 = conv2d(filters, 3, RESIDUAL_GAIN, policy, "conv2")
        self.shortcut = None
        if first or downsample:
            self.shortcut = conv2d(filters, 1, 1.0, policy, "shortcut")

    def build(self, input_shape):
        if self.built:
            return
        c_in = input_shape[-1]
        if not self.downsample and c_in != self.filters:
            raise ValueError(
                f"identity shortcut needs {self.filters} input channels, "
                f"got {c_in}")
        hidden = self.filters if self.first else c_in
        self.conv1 = conv2d(hidden, 3, RESIDUAL_GAIN, self.dtype_policy,
                            "conv1")
        build_layer(self.conv1, input_shape)
        build_layer(self.conv2, tuple(input_shape[:3]) + (hidden,))
        if self.shortcut is not None:
            build_layer(self.shortcut, input_shape)

    def call(self, x):
        h = x if self.first else ops.relu(x)
        h = ops.relu(self.conv1(h))
        if self.downsample:
            # pool(conv2(.)) as one stride-2 conv: 2.25x fewer MACs.
            h = conv3x3_meanpool(h, self.conv2.kernel, self.conv2.bias)
            # Pool, then the 1x1 conv (they commute): 4x fewer MACs.
            shortcut = conv1x1(self.pool(x), self.shortcut.kernel,
                               self.shortcut.bias)
            return shortcut + self.residual_factor * h
        return x + self.residual_factor * self.conv2(h)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.downsample:
            h = None if h is None else h // 2
            w = None if w is None else w // 2
        return (b, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, first=self.first,
                      downsample=self.downsample,
                      residual_factor=self.residual_factor)
        return config
