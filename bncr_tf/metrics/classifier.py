"""A small Fashion-MNIST classifier and FID on its penultimate features.

`tools/train_fmnist_classifier.py` trains `build_classifier` on the clean
Fashion-MNIST training set and writes `<out>/classifier.keras` (Keras 3
format, no pickle) plus `<out>/classifier.json` (test accuracy, ...).
`ClassifierFeatures` loads that file and maps uint8 images to the
`feature_dim`-d output of its penultimate layer ("features"): the feature
extractor `--extractor=classifier --classifier_path=...` of FID / KID.

Such FIDs measure distances in a space that separates Fashion-MNIST
classes; they are NOT comparable with published (Inception) FIDs, nor
between two different classifier files.

Network (width w): three blocks of 3x3 conv (no bias) + batch norm + ReLU,
each followed by 2x2 max pooling (w, 2w, 4w channels; the last block has two
convs), global average pooling, Dense(feature_dim) + ReLU = the features,
then Dense(10) logits. Its input is uint8-valued RGB [N, R, R, 3] (any
float or integer dtype), scaled to [-1, 1] inside.
"""

import os
import time

import numpy as np
import tensorflow as tf

from bncr_tf.fileio import sha256_file  # noqa: F401  (public name)
from bncr_tf.errors import UserError

NUM_CLASSES = 10
FEATURES_LAYER = "features"
LOGITS_LAYER = "logits"
MODEL_FILE = "classifier.keras"
SUMMARY_FILE = "classifier.json"
TOOL = "tools/train_fmnist_classifier.py"


def build_classifier(resolution=32, width=32, feature_dim=128,
                     num_classes=NUM_CLASSES):
    """Builds the (untrained) classifier as a Keras functional model.

    Args:
      resolution: image size R of the [N, R, R, 3] input (a multiple of 8).
      width: channels of the first block (then 2x and 4x).
      feature_dim: size of the penultimate (feature) layer.
      num_classes: number of logits.
    Returns:
      A `keras.Model` from uint8-valued float images [N, R, R, 3] to logits
      [N, num_classes]; its layer "features" gives the penultimate features.
    Raises:
      ValueError: bad sizes.
    """
    import keras
    from keras import layers
    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8, got "
                         f"{resolution}")
    if width < 1 or feature_dim < 1 or num_classes < 2:
        raise ValueError("width, feature_dim must be >= 1 and num_classes "
                         ">= 2")
    inputs = keras.Input((resolution, resolution, 3), name="images")
    h = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    plan = ((width,), (2 * width,), (4 * width, 4 * width))
    for b, channels in enumerate(plan):
        for c, ch in enumerate(channels):
            h = layers.Conv2D(ch, 3, padding="same", use_bias=False,
                              name=f"conv{b}_{c}")(h)
            # momentum 0.9: the moving statistics settle within ~50 steps,
            # so even short (test) trainings evaluate correctly.
            h = layers.BatchNormalization(momentum=0.9,
                                          name=f"bn{b}_{c}")(h)
            h = layers.ReLU(name=f"relu{b}_{c}")(h)
        h = layers.MaxPooling2D(2, name=f"pool{b}")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dense(feature_dim, activation="relu", name=FEATURES_LAYER)(h)
    logits = layers.Dense(num_classes, name=LOGITS_LAYER)(h)
    return keras.Model(inputs, logits, name="fmnist_classifier")


def train_classifier(model, images, labels, epochs=5, batch_size=128,
                     seed=0, learning_rate=2e-3, flip=True, log=print):
    """Trains `model` in place with Adam, cosine learning-rate decay and
    cross-entropy; mini-batches are drawn without replacement.

    The order of the images and the horizontal flips of each epoch come
    from numpy.random.default_rng([seed, epoch]); seed the weights with
    `keras.utils.set_random_seed` before building the model.

    Args:
      model: a `build_classifier` model.
      images: uint8 [N, R, R, 3].
      labels: integer [N] in [0, num_classes).
      epochs: passes over the data.
      batch_size: images per step.
      seed: seed of the order and augmentation.
      learning_rate: peak Adam learning rate (decays to 0).
      flip: flip half of the images horizontally (augmentation).
      log: called with one progress line per epoch (None: silent).
    Returns:
      list of per-epoch dicts {epoch, loss, accuracy, seconds} (running
      training loss and accuracy, augmentations included).
    Raises:
      ValueError: bad shapes or labels.
    """
    import keras
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    classes = int(model.output_shape[-1])
    if images.dtype != np.uint8 or images.ndim != 4 or \
            images.shape[1:] != tuple(model.input_shape[1:]):
        raise ValueError(f"images must be uint8 {model.input_shape}, got "
                         f"{images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.min() < 0 or \
            labels.max() >= classes:
        raise ValueError(f"labels must be [N] integers in [0, {classes}) "
                         f"(unlabelled data cannot train the classifier)")
    n = len(images)
    steps_per_epoch = -(-n // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(epochs * steps_per_epoch, 1))
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    resolution = images.shape[1]
    spec = [tf.TensorSpec([None, resolution, resolution, 3], tf.uint8),
            tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(tf.cast(x, tf.float32), training=True)
            loss = loss_fn(y, logits)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables),
                                      variables))
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, axis=1), y), tf.int64))
        return loss, correct

    history = []
    for epoch in range(epochs):
        start = time.time()
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
        total_loss, total_correct = 0.0, 0
        for first in range(0, n, batch_size):
            index = order[first:first + batch_size]
            x = images[index]
            mask = flips[index]
            x[mask] = x[mask, :, ::-1]
            loss, correct = step(x, labels[index])
            total_loss += float(loss) * len(index)
            total_correct += int(correct)
        record = {"epoch": epoch + 1, "loss": total_loss / n,
                  "accuracy": total_correct / n,
                  "seconds": time.time() - start}
        history.append(record)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, "
                f"train accuracy {record['accuracy']:.4f} (running), "
                f"{record['seconds']:.1f} s")
    return history


def predict_logits(model, images, batch_size=500):
    """Logits float32 [N, classes] of uint8 images [N, R, R, 3]."""
    images = np.asarray(images)
    out = [np.asarray(model(images[i:i + batch_size].astype(np.float32),
                            training=False))
           for i in range(0, len(images), batch_size)]
    if not out:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(out)


def accuracy(model, images, labels, batch_size=500):
    """Top-1 accuracy (float in [0, 1]) of `model` on uint8 images."""
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("accuracy of an empty set")
    predicted = predict_logits(model, images, batch_size).argmax(axis=1)
    return float(np.mean(predicted == labels))


def resolve_classifier_path(path):
    """The classifier file of `path` (the file itself, or a directory
    holding classifier.keras).

    Raises:
      UserError: missing path or file.
    """
    if not path:
        raise UserError(
            f"--extractor=classifier needs --classifier_path: the "
            f"{MODEL_FILE} written by {TOOL}")
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(path):
        raise UserError(f"classifier {path} does not exist; train one with "
                        f"python {TOOL} --out=DIR")
    return path


def load_classifier(path):
    """Loads a classifier written by tools/train_fmnist_classifier.py.

    Args:
      path: the .keras file, or a directory holding classifier.keras.
    Returns:
      (keras.Model, absolute path of the file).
    Raises:
      UserError: missing file, or not such a classifier.
    """
    import keras
    path = resolve_classifier_path(path)
    not_ours = (f"{path} is not a classifier written by {TOOL} (a Keras "
                f".keras file with a \"{FEATURES_LAYER}\" layer)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 (zip, JSON, h5 and Keras errors)
        raise UserError(f"{not_ours}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}"
                        ) from None
    names = {layer.name for layer in getattr(model, "layers", [])}
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if FEATURES_LAYER not in names or len(shape) != 4 or shape[-1] != 3 \
            or shape[1] is None or shape[1] != shape[2]:
        raise UserError(not_ours)
    return model, path


class ClassifierFeatures:
    """Penultimate features of a trained Fashion-MNIST classifier: NOT
    COMPARABLE with published FIDs.

    Args:
      path: classifier.keras written by tools/train_fmnist_classifier.py,
        or the directory holding it.
      batch_size: images per call of the compiled function.
    Raises:
      UserError: missing file or not a classifier.
    """

    name = "fmnist_classifier"
    comparable = False

    def __init__(self, path, batch_size=256):
        import keras
        self.model, self.path = load_classifier(path)
        self.sha256 = sha256_file(self.path)
        self.fingerprint = f"{self.name}-{self.sha256}"
        self.batch_size = int(batch_size)
        self.resolution = int(self.model.input_shape[1])
        self.features = keras.Model(
            self.model.inputs,
            self.model.get_layer(FEATURES_LAYER).output)
        self.dim = int(self.features.output_shape[-1])
        r = self.resolution
        self._fn = tf.function(self._features, input_signature=[
            tf.TensorSpec([None, r, r, 3], tf.uint8)])

    def _features(self, images):
        return self.features(tf.cast(images, tf.float32), training=False)

    def __call__(self, images):
        """uint8 [N, R, R, 3] -> float64 [N, feature_dim].

        Raises:
          UserError: images of another size than the classifier's.
        """
        images = np.asarray(images, np.uint8)
        r = self.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 3):
            raise UserError(
                f"the classifier {self.path} takes {r} x {r} RGB images, "
                f"got shape {images.shape}; evaluate at --resolution={r} or "
                f"train a classifier at this size")
        out = [self._fn(images[i:i + self.batch_size]).numpy()
               for i in range(0, len(images), self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), np.float64)
        return np.concatenate(out).astype(np.float64)
