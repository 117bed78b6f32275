"""Trains the Fashion-MNIST classifier whose features FID can use.

Example:

    python tools/train_fmnist_classifier.py --out=runs/fmnist_classifier
    python -m bncr_tf.evaluate --run_dir=runs/00003-bncrgan-N-32px \\
        --extractor=classifier --classifier_path=runs/fmnist_classifier

Trains `bncr_tf.metrics.classifier.build_classifier` on the clean training
split (--data, 32 x 32: grey replicated to RGB, zero-padded 28 -> 32),
measures its top-1 accuracy on --test_data, and writes (atomically)

  <out>/classifier.keras   the model (Keras 3 format, no pickle);
  <out>/classifier.json    test and train accuracy, epochs, seconds, number
                           of parameters, data specs, seed, sha256 of the
                           model file and the per-epoch history.

One progress line per epoch and the final accuracy go to stdout. The same
flags give the same order of images, augmentation and initial weights.
Exit status 2 with one "error: ..." line on user errors (missing data, ...).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/train_fmnist_classifier.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf import data  # noqa: E402
from bncr_tf import fileio  # noqa: E402
from bncr_tf.metrics import classifier  # noqa: E402
from bncr_tf.errors import UserError  # noqa: E402

RESOLUTION = 32


def parse_args(argv=None):
    """Parses the command line (argv without the program name)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True,
                   help="Output directory (classifier.keras, "
                   "classifier.json).")
    p.add_argument("--data", default="fashion_mnist:train",
                   help="Labelled training images: fashion_mnist:train"
                   "[:DIR].")
    p.add_argument("--test_data", default="fashion_mnist:test",
                   help="Labelled test images: fashion_mnist:test[:DIR].")
    p.add_argument("--epochs", type=int, default=3,
                   help="Passes over the training set (3: 91.6 %% test "
                   "accuracy in 4 min on 2 busy CPU cores).")
    p.add_argument("--batch", type=int, default=128,
                   help="Images per training step.")
    p.add_argument("--learning_rate", type=float, default=2e-3,
                   help="Peak Adam learning rate (cosine decay to 0).")
    p.add_argument("--width", type=int, default=32,
                   help="Channels of the first conv block (then 2x, 4x).")
    p.add_argument("--feature_dim", type=int, default=128,
                   help="Size of the penultimate (feature) layer.")
    p.add_argument("--seed", type=int, default=0,
                   help="Seed of the weights, image order and flips.")
    p.add_argument("--limit", type=int, default=0,
                   help="Use only the first N training and the first N "
                   "test images (0 = all).")
    p.add_argument("--no_flip", action="store_true",
                   help="Disable the random horizontal flips.")
    args = p.parse_args(argv)
    for name in ("epochs", "batch", "width", "feature_dim"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    if args.limit < 0 or args.seed < 0:
        p.error("--limit and --seed must be non-negative")
    if not args.learning_rate > 0:
        p.error("--learning_rate must be positive")
    if not args.out.strip():
        p.error("--out must not be empty")
    return args


def load_labelled(spec, limit):
    """uint8 [N, 32, 32, 3] images and int64 labels of a labelled source.

    Raises:
      UserError: bad spec, missing files or missing labels.
    """
    try:  # one chunk holding every image (they are in memory anyway)
        chunks = list(data.iter_source_uint8(
            spec, RESOLUTION, chunk_size=1 << 30, limit=limit or None))
    except data.DataError as e:
        raise UserError(f"cannot load {spec}: {e}") from None
    images, labels = chunks[0]
    if labels.min() < 0 or labels.max() >= classifier.NUM_CLASSES:
        raise UserError(f"{spec} has no labels in [0, "
                        f"{classifier.NUM_CLASSES}) (labels-idx1-ubyte "
                        f"file missing?)")
    return images, labels


def save_model(model, path):
    """Saves `model` to the .keras file `path` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory,
                                     prefix=".classifier-") as tmp:
        staged = os.path.join(tmp, classifier.MODEL_FILE)
        model.save(staged)
        with open(staged, "rb") as f:
            fileio.atomic_write_bytes(path, f.read())


def run(args, log=print):
    """Trains, evaluates and writes the classifier.

    Args:
      args: parsed flags (`parse_args`).
      log: called with each progress line.
    Returns:
      the summary dict written to classifier.json.
    Raises:
      UserError: missing or unlabelled data, unwritable --out.
    """
    import keras
    start = time.time()
    out = os.path.abspath(os.path.expanduser(args.out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} exists and is not a directory")
    train_x, train_y = load_labelled(args.data, args.limit)
    test_x, test_y = load_labelled(args.test_data, args.limit)
    log(f"train: {len(train_x)} images from {args.data}; test: "
        f"{len(test_x)} images from {args.test_data}")
    keras.utils.set_random_seed(args.seed)
    model = classifier.build_classifier(
        RESOLUTION, width=args.width, feature_dim=args.feature_dim)
    params = int(model.count_params())
    log(f"classifier: {params} parameters, {args.epochs} epochs of batch "
        f"{args.batch}")
    history = classifier.train_classifier(
        model, train_x, train_y, epochs=args.epochs, batch_size=args.batch,
        seed=args.seed, learning_rate=args.learning_rate,
        flip=not args.no_flip, log=log)
    test_accuracy = classifier.accuracy(model, test_x, test_y)
    train_accuracy = classifier.accuracy(model, train_x, train_y)
    model_path = os.path.join(out, classifier.MODEL_FILE)
    try:
        save_model(model, model_path)
    except OSError as e:
        raise UserError(f"cannot write {model_path}: {e.strerror or e}") \
            from None
    summary = {
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "epochs": args.epochs,
        "seconds": round(time.time() - start, 1),
        "parameters": params,
        "data": args.data, "test_data": args.test_data,
        "train_images": int(len(train_x)), "test_images": int(len(test_x)),
        "limit": args.limit, "seed": args.seed, "batch": args.batch,
        "learning_rate": args.learning_rate, "flip": not args.no_flip,
        "width": args.width, "feature_dim": args.feature_dim,
        "resolution": RESOLUTION,
        "model_file": classifier.MODEL_FILE,
        "model_sha256": classifier.sha256_file(model_path),
        "history": history,
    }
    json_path = os.path.join(out, classifier.SUMMARY_FILE)
    try:
        fileio.atomic_write_text(
            json_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {json_path}: {e.strerror or e}") \
            from None
    log(f"test accuracy {test_accuracy:.4f} ({len(test_x)} images), train "
        f"accuracy {train_accuracy:.4f}, {summary['seconds']:.0f} s; wrote "
        f"{model_path}")
    return summary


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        run(args, log=lambda line: print(line, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
