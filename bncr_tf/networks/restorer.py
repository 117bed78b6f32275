"""The restorer G of UNIR (Pajot et al., ICLR 2019): degraded y -> x_hat.

A residual network that works at the input resolution throughout: no
resampling, so it is fully convolutional apart from one self-attention
layer, and any image size H x W >= 1 x 1 goes through without padding or
cropping. The layout follows the SAGAN-style generator of the released UNIR
code (unir/module/SAGAN.py, read for shapes only; written here from the
paper's description):

  * six pre-activation residual blocks BN -> ReLU -> SNConv3x3 -> BN -> ReLU
    -> SNConv3x3, with channels ngf, 16 ngf, 8 ngf, 4 ngf, 2 ngf, ngf and a
    1x1 convolution on the shortcut when the channel count changes;
  * self-attention after the fifth block (2 ngf channels, attention size
    2 ngf / 8, learned gain gamma starting at 0);
  * BN -> ReLU -> Conv3x3 -> tanh, added to the input (UNIR's `add_input`
    for convolution + noise corruptions): x_hat = y + tanh(.).

SN is spectral normalisation (one power iteration per training call, as
Miyato et al. 2018); BN is batch normalisation (moving statistics at
inference). Initialisation is orthogonal with gain 0.1 (UNIR's gain when the
output is added to the input).

[choice] Attention: the released code normalises its softmax over the
query axis; here it is over the keys (SAGAN's definition). The keys and
values are resized (bilinear, antialiased) to at most `KEY_GRID` x
`KEY_GRID` positions, so memory grows linearly with the number of pixels
(a 512 x 512 photo needs 262144 x 256 attention weights, not 262144^2); at
16 px and below this is exact full attention. The resize is what makes the
network "any size": the convolutions alone are size-agnostic.
"""

import keras
import tensorflow as tf
from keras import ops

KEY_GRID = 16
INIT_GAIN = 0.1


def _init():
    return keras.initializers.Orthogonal(gain=INIT_GAIN)


def _normalize(v, eps=1e-12):
    return v / (tf.norm(v) + eps)


class SNConv2D(keras.layers.Layer):
    """A 'same'-padded stride-1 convolution with spectral normalisation.

    The weight used is W / sigma(W); sigma is estimated by one power
    iteration from the stored vector u (non-trainable). Calls with
    training=True store the new u (PyTorch's `spectral_norm` in train
    mode); inference calls compute the same estimate without storing it,
    so inference is a pure function of the variables. Gradients flow
    through sigma with u and v held fixed (Miyato et al. 2018).
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size

    def build(self, input_shape):
        k, c = self.kernel_size, input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, c, self.filters),
            initializer=_init())
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer="zeros")
        self.u = self.add_weight(
            name="u", shape=(self.filters,), trainable=False,
            initializer=keras.initializers.RandomNormal(seed=None))

    def sigma(self, training=False):
        """sigma(W) and the updated u (one power iteration)."""
        w = tf.reshape(tf.convert_to_tensor(self.kernel),
                       [-1, self.filters])
        u = _normalize(tf.convert_to_tensor(self.u))
        v = tf.stop_gradient(_normalize(tf.linalg.matvec(w, u)))
        u_new = tf.stop_gradient(_normalize(
            tf.linalg.matvec(w, v, transpose_a=True)))
        sigma = tf.tensordot(v, tf.linalg.matvec(w, u_new), 1)
        del training
        return sigma, u_new

    def call(self, x, training=False):
        sigma, u_new = self.sigma()
        if training:
            self.u.assign(u_new)
        kernel = self.kernel / sigma
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
        return tf.nn.bias_add(y, self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)


def _bn(name):
    # PyTorch's BatchNorm2d: momentum 0.1 (Keras 0.9), eps 1e-5.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                           name=name)


class ResBlock(keras.layers.Layer):
    """BN -> ReLU -> SNConv3x3 -> BN -> ReLU -> SNConv3x3, plus the input
    (through a 1x1 convolution when the channel count changes)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.bn1 = _bn("bn1")
        self.conv1 = SNConv2D(filters, 3, name="conv1")
        self.bn2 = _bn("bn2")
        self.conv2 = SNConv2D(filters, 3, name="conv2")
        self.shortcut = None

    def build(self, input_shape):
        c = input_shape[-1]
        self.bn1.build(input_shape)
        self.conv1.build(input_shape)
        mid = tuple(input_shape[:-1]) + (self.filters,)
        self.bn2.build(mid)
        self.conv2.build(mid)
        if c != self.filters:
            self.shortcut = keras.layers.Conv2D(
                self.filters, 1, kernel_initializer=_init(), name="shortcut")
            self.shortcut.build(input_shape)

    def call(self, x, training=False):
        h = tf.nn.relu(self.bn1(x, training=training))
        h = self.conv1(h, training=training)
        h = tf.nn.relu(self.bn2(h, training=training))
        h = self.conv2(h, training=training)
        s = x if self.shortcut is None else self.shortcut(x)
        return h + s

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)


class SelfAttention(keras.layers.Layer):
    """SAGAN self-attention: x + conv1x1(gamma * softmax(q k^T) v).

    q, k, v are 1x1 SN convolutions to `size` channels; k and v are resized
    to at most KEY_GRID x KEY_GRID positions (module docstring).
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.q = SNConv2D(size, 1, name="query")
        self.k = SNConv2D(size, 1, name="key")
        self.v = SNConv2D(size, 1, name="value")
        self.out = None

    def build(self, input_shape):
        c = input_shape[-1]
        for layer in (self.q, self.k, self.v):
            layer.build(input_shape)
        self.out = SNConv2D(c, 1, name="out")
        self.out.build(tuple(input_shape[:-1]) + (self.size,))
        self.gamma = self.add_weight(name="gamma", shape=(),
                                     initializer="zeros")

    def call(self, x, training=False):
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        q = self.q(x, training=training)
        k = self.k(x, training=training)
        v = self.v(x, training=training)
        grid = tf.stack([tf.minimum(h, KEY_GRID), tf.minimum(w, KEY_GRID)])
        kv = tf.image.resize(tf.concat([k, v], -1), grid, method="bilinear",
                             antialias=True)
        k, v = kv[..., :self.size], kv[..., self.size:]
        q = tf.reshape(q, [b, -1, self.size])
        k = tf.reshape(k, [b, -1, self.size])
        v = tf.reshape(v, [b, -1, self.size])
        att = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)
        o = tf.reshape(tf.matmul(att, self.gamma * v),
                       [b, h, w, self.size])
        return x + self.out(o, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape


class Restorer(keras.Model):
    """G: degraded images [B, H, W, 3] in [-1, 1] -> restored x_hat.

    Args:
      ngf: base channel count (UNIR: 32; `--width` of the run).
      **kwargs: keras.Model arguments (name).

    x_hat = y + tanh(.) is not clipped (UNIR); exports clip when they
    convert to uint8.
    """

    MULTIPLIERS = (1, 16, 8, 4, 2)

    def __init__(self, ngf=32, **kwargs):
        super().__init__(**kwargs)
        self.ngf = ngf
        self.blocks = [ResBlock(m * ngf, name=f"block{i + 1}")
                       for i, m in enumerate(self.MULTIPLIERS)]
        self.attention = SelfAttention(max(1, (2 * ngf) // 8),
                                       name="attention")
        self.block6 = ResBlock(ngf, name="block6")
        self.bn_out = _bn("bn_out")
        self.conv_out = keras.layers.Conv2D(
            3, 3, padding="same", kernel_initializer=_init(), name="conv_out")

    def build(self, input_shape=None):
        if self.built:
            return
        shape = (None, None, None, 3)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.attention.build(shape)
        self.block6.build(shape)
        shape = (None, None, None, self.ngf)
        self.bn_out.build(shape)
        self.conv_out.build(shape)
        self.built = True

    def call(self, y, training=False):
        y = tf.cast(y, tf.float32)
        h = y
        for block in self.blocks:
            h = block(h, training=training)
        h = self.attention(h, training=training)
        h = self.block6(h, training=training)
        h = tf.nn.relu(self.bn_out(h, training=training))
        return y + tf.tanh(self.conv_out(h))

    def get_config(self):
        config = super().get_config()
        config.update(ngf=self.ngf)
        return config
