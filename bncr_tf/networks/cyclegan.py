"""CycleGAN's networks (Zhu et al., ICCV 2017) for restoration with
set-level supervision (paper section 7.6, docs/restoration.md).

Layouts follow the defaults of the authors' PyTorch code
(junyanz/pytorch-CycleGAN-and-pix2pix, read for facts only; written here
from those facts):

  * generator ("resnet_<n>blocks"): reflect-pad 3, conv 7x7 ngf, IN, ReLU;
    two stride-2 conv 3x3 (2 ngf, 4 ngf), IN, ReLU; n residual blocks
    (reflect-pad 1, conv 3x3, IN, ReLU, reflect-pad 1, conv 3x3, IN, plus
    the input); two stride-2 transposed conv 3x3 (2 ngf, ngf), IN, ReLU;
    reflect-pad 3, conv 7x7 to 3 channels, tanh;
  * discriminator (70x70 PatchGAN, n_layers = 3): conv 4x4 stride 2 ndf,
    LeakyReLU 0.2; conv 4x4 stride 2 with 2 ndf and 4 ndf, IN, LeakyReLU;
    conv 4x4 stride 1 with 8 ndf, IN, LeakyReLU; conv 4x4 stride 1 to one
    score per patch (raw, for the least-squares loss);
  * IN is instance normalisation without affine parameters (eps 1e-5),
    so every image is processed independently of its batch; weights are
    initialised N(0, 0.02), biases 0.

[choice] Convolutions followed by IN have no bias: the reference code
gives them one, but IN subtracts the per-channel mean, so such a bias
cancels exactly and never receives a gradient.

[choice] Six residual blocks (the reference uses 9 at 256 px and 6 at
128 px; our images are 32 px). [choice] Any size: the generator pads its
input by edge replication to a multiple of 4 of at least `MIN_SIZE` x
`MIN_SIZE` and crops the output back, so every H x W >= 1 x 1 is restored
at its own size (the reflect paddings inside need a bottleneck of at least
2 x 2).
"""

import keras
import tensorflow as tf

MIN_SIZE = 16
INIT_STD = 0.02


def _init():
    return keras.initializers.RandomNormal(stddev=INIT_STD)


def instance_norm(x, eps=1e-5):
    """Instance normalisation without affine parameters.

    Args:
      x: [B, H, W, C] float32.
    Returns:
      (x - mean) / sqrt(var + eps), statistics over H and W per image and
      channel (biased variance, as PyTorch's InstanceNorm2d).
    """
    mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps)


def reflect_pad(x, p):
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")


def edge_pad_to(x, height, width):
    """Pads [B, H, W, C] at the bottom and right to [B, height, width, C]
    by repeating the last row and column (any amount)."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    rows = tf.minimum(tf.range(height), h - 1)
    cols = tf.minimum(tf.range(width), w - 1)
    return tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)


def _conv(filters, kernel, stride=1, name=None, padding="valid",
          bias=False):
    return keras.layers.Conv2D(filters, kernel, strides=stride,
                               padding=padding, use_bias=bias,
                               kernel_initializer=_init(), name=name)


class ResidualBlock(keras.layers.Layer):
    """x + IN(conv3x3(pad(ReLU(IN(conv3x3(pad(x))))))), reflect padding."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv1 = _conv(filters, 3, name="conv1")
        self.conv2 = _conv(filters, 3, name="conv2")

    def build(self, input_shape):
        shape = (None, None, None, self.filters)
        self.conv1.build(shape)
        self.conv2.build(shape)

    def call(self, x):
        h = tf.nn.relu(instance_norm(self.conv1(reflect_pad(x, 1))))
        h = instance_norm(self.conv2(reflect_pad(h, 1)))
        return x + h

    def compute_output_shape(self, input_shape):
        return input_shape


class CycleGANGenerator(keras.Model):
    """A CycleGAN generator: images [B, H, W, 3] in [-1, 1] -> [B, H, W, 3]
    in (-1, 1) (tanh). Used both ways: G (degraded -> clean, the restorer)
    and F (clean -> degraded).

    Args:
      ngf: base channel count (reference 64; `--width` of the run).
      blocks: residual blocks at 1/4 resolution.
      **kwargs: keras.Model arguments (name).

    Example:
      >>> g = CycleGANGenerator(ngf=8, name="G"); g.build()
      >>> g(tf.zeros([2, 20, 27, 3])).shape
      TensorShape([2, 20, 27, 3])
    """

    def __init__(self, ngf=64, blocks=6, **kwargs):
        super().__init__(**kwargs)
        self.ngf = ngf
        self.num_blocks = blocks
        self.conv_in = _conv(ngf, 7, name="conv_in")
        self.down1 = _conv(2 * ngf, 3, 2, name="down1", padding="same")
        self.down2 = _conv(4 * ngf, 3, 2, name="down2", padding="same")
        self.blocks = [ResidualBlock(4 * ngf, name=f"block{i + 1}")
                       for i in range(blocks)]
        self.up1 = keras.layers.Conv2DTranspose(
            2 * ngf, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=_init(), name="up1")
        self.up2 = keras.layers.Conv2DTranspose(
            ngf, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=_init(), name="up2")
        self.conv_out = _conv(3, 7, name="conv_out", bias=True)

    def build(self, input_shape=None):
        if self.built:
            return
        n = self.ngf
        self.conv_in.build((None, None, None, 3))
        self.down1.build((None, None, None, n))
        self.down2.build((None, None, None, 2 * n))
        for block in self.blocks:
            block.build((None, None, None, 4 * n))
        self.up1.build((None, None, None, 4 * n))
        self.up2.build((None, None, None, 2 * n))
        self.conv_out.build((None, None, None, n))
        self.built = True

    def call(self, x, training=False):
        del training  # no batch statistics, no dropout
        x = tf.cast(x, tf.float32)
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        # Edge-pad to a multiple of 4, at least MIN_SIZE (module docstring).
        ph = tf.maximum(MIN_SIZE, (h + 3) // 4 * 4)
        pw = tf.maximum(MIN_SIZE, (w + 3) // 4 * 4)
        t = edge_pad_to(x, ph, pw)
        t = tf.nn.relu(instance_norm(self.conv_in(reflect_pad(t, 3))))
        t = tf.nn.relu(instance_norm(self.down1(t)))
        t = tf.nn.relu(instance_norm(self.down2(t)))
        for block in self.blocks:
            t = block(t)
        t = tf.nn.relu(instance_norm(self.up1(t)))
        t = tf.nn.relu(instance_norm(self.up2(t)))
        t = tf.tanh(self.conv_out(reflect_pad(t, 3)))
        return t[:, :h, :w, :]

    def get_config(self):
        config = super().get_config()
        config.update(ngf=self.ngf, blocks=self.num_blocks)
        return config


class PatchDiscriminator(keras.Model):
    """The 70x70 PatchGAN D: images [B, R, R, 3] in [-1, 1] -> raw scores
    [B, P, P, 1] (P = 2 at R = 32, 30 at R = 256).

    Args:
      ndf: base channel count (reference 64; `--width` of the run).
      **kwargs: keras.Model arguments (name).
    """

    def __init__(self, ndf=64, **kwargs):
        super().__init__(**kwargs)
        self.ndf = ndf
        self.convs = [_conv(m * ndf, 4, s, name=f"conv{i + 1}", bias=i == 0)
                      for i, (m, s) in enumerate(((1, 2), (2, 2), (4, 2),
                                                  (8, 1)))]
        self.conv_out = _conv(1, 4, name="conv_out", bias=True)

    def build(self, input_shape=None):
        if self.built:
            return
        c = 3
        for conv, m in zip(self.convs, (1, 2, 4, 8)):
            conv.build((None, None, None, c))
            c = m * self.ndf
        self.conv_out.build((None, None, None, c))
        self.built = True

    def call(self, x, training=False):
        del training
        h = tf.cast(x, tf.float32)
        for i, conv in enumerate(self.convs):
            # PyTorch's padding=1 on every 4x4 convolution.
            h = conv(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]))
            if i > 0:
                h = instance_norm(h)
            h = tf.nn.leaky_relu(h, 0.2)
        return self.conv_out(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]))

    def get_config(self):
        config = super().get_config()
        config.update(ndf=self.ndf)
        return config
