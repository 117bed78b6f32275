"""Exports a run's EMA generators as TF Serving SavedModels.

Example:

    python tools/export_savedmodel.py --run_dir=runs/00001-bncrgan-N-32px
    python tools/export_savedmodel.py --run_dir=runs/00001-bncrgan-N-32px \\
        --checkpoint=20000 --models=generator,degrade --export_root=/srv/bncr

Writes `<export_root>/<model>/<version>/` for each model (generator,
blur_kernel, noise, quality, degrade: whichever the run's variant has), the
next free version, never overwriting one. Signatures, REST examples and the
TF Serving command: docs/serving.md. Library: `bncr_tf.export`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/export_savedmodel.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from bncr_tf import export  # noqa: E402
from bncr_tf.training.config import UserError  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "run_dir", None,
    "Run directory written by bncr_tf.train (may be omitted when "
    "--checkpoint is a path inside <run_dir>/checkpoints/).")
flags.DEFINE_string(
    "checkpoint", "latest",
    "latest, a step number (checkpoints/ckpt-<step>) or a checkpoint path "
    "prefix (without .index).")
flags.DEFINE_string(
    "export_root", None,
    "Directory receiving <model>/<version>/ (default <run_dir>/export).")
flags.DEFINE_list(
    "models", [],
    "Models to export, comma-separated, from: "
    + ", ".join(export.MODEL_NAMES) + " (default: all the variant has).")

flags.register_validator(
    "models", lambda names: all(n in export.MODEL_NAMES for n in names),
    message="--models must be a comma-separated subset of "
    + ",".join(export.MODEL_NAMES))
flags.register_validator(
    "checkpoint", lambda v: bool(v and v.strip()),
    message="--checkpoint must be latest, a step number or a path")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        paths = export.export_from_run(
            run_dir=FLAGS.run_dir, checkpoint=FLAGS.checkpoint,
            export_root=FLAGS.export_root, models=FLAGS.models or None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    model_dir = os.path.dirname(paths[0])
    print(f"serve with: docker run --rm -p 8501:8501 -v "
          f"{os.path.abspath(model_dir)}:/models/{os.path.basename(model_dir)}"
          f" -e MODEL_NAME={os.path.basename(model_dir)} tensorflow/serving"
          "  (docs/serving.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
