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

# Allow running as `python tools/export_savedmodel.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf import cli  # noqa: E402

# Quiet TensorFlow's C++ messages unless asked for (--verbose or
# TF_CPP_MIN_LOG_LEVEL); before anything imports TensorFlow.
cli.quiet_tensorflow()
cli.import_tensorflow()

from absl import flags  # noqa: E402

from bncr_tf.export import MODEL_NAMES  # noqa: E402

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
    + ", ".join(MODEL_NAMES) + " (default: all the variant has).")

flags.register_validator(
    "models", lambda names: all(n in MODEL_NAMES for n in names),
    message="--models must be a comma-separated subset of "
    + ",".join(MODEL_NAMES))
flags.register_validator(
    "checkpoint", lambda v: bool(v and v.strip()),
    message="--checkpoint must be latest, a step number or a path")


flags.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)


def main(argv):
    """Exports; exit 0, or 2 with one `error:` line (see bncr_tf.cli)."""
    del argv
    # Cheapest first: the run directory (config.json), then the model
    # names against its variant, then the checkpoint (the latest that
    # reads back intact, as training resumes from it).
    from bncr_tf import export
    paths = export.export_from_run(
        run_dir=FLAGS.run_dir, checkpoint=FLAGS.checkpoint,
        export_root=FLAGS.export_root, models=FLAGS.models or None,
        warn=cli.warning)
    for path in paths:
        print(path)
    model_dir = os.path.dirname(paths[0])
    print(f"serve with: docker run --rm -p 8501:8501 -v "
          f"{os.path.abspath(model_dir)}:/models/{os.path.basename(model_dir)}"
          f" -e MODEL_NAME={os.path.basename(model_dir)} tensorflow/serving"
          "  (docs/serving.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
