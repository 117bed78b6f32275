"""Builds a degraded training set (settings A-Q, noise, ffhq_*) as TFRecords.

Example:

    python tools/make_degraded_dataset.py --source=tfds:cifar10:train \\
        --setting=N --resolution=32 --out_dir=data/cifar10_N --seed=0 \\
        --workers=2 --shards=8

With --restore, each degraded image is restored before it is written (the
training sets of the paper's restoration baselines; docs/reproduction.md):

    python tools/make_degraded_dataset.py --source=tfds:cifar10:train \
        --setting=B --out_dir=data/cifar10_B_deblur_gt --restore=deblur_gt

deblur_gt: Krishnan-Fergus deconvolution with each image's true kernel
(Deblur+GAN†); deblock: POCS deblocking with the quantisation constraint set
of each image's JPEG quality (Deblock+GAN; our substitute for Pointwise
SA-DCT). Only the images the setting degraded are restored; the metadata
(kernel, jpeg_quality, ...) are those of the degradation.

Output: `<out_dir>/data.tfrecord-SSSSS-of-NNNNN` (one `tf.train.Example` per
image, PNG-encoded degraded uint8 image plus its degradation metadata; see
docs/design.md) and `<out_dir>/summary.json`. The records depend only on the
source, --setting, --seed and --limit (not on --workers, --chunk_size or
--shards beyond the file split). Progress lines go to stderr.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/make_degraded_dataset.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from bncr_tf import data  # noqa: E402
from bncr_tf.baselines import restore as restore_lib  # noqa: E402
from bncr_tf.degradations import builder  # noqa: E402
from bncr_tf.degradations import settings as settings_lib  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "source", None,
    "Clean source: tfds:<name>:<split>, a folder of images, "
    "builtin:skimage_patches, or npy:<file.npy> (uint8 [N, R, R, 3]).")
flags.DEFINE_string(
    "setting", None,
    "Degradation setting: " + ", ".join(settings_lib.SETTINGS) + ".")
flags.DEFINE_integer("resolution", 32, "Image size R (R x R).")
flags.DEFINE_string("out_dir", None, "Output directory.")
flags.DEFINE_integer("seed", 0, "Degradation seed (>= 0).")
flags.DEFINE_integer("source_seed", 0, "Seed of the clean source itself "
                     "(only builtin:skimage_patches uses it).")
flags.DEFINE_integer("workers", 2, "Worker threads (output does not depend "
                     "on it).")
flags.DEFINE_integer("limit", None, "Use only the first N source images.")
flags.DEFINE_integer("shards", 1, "Number of TFRecord files.")
flags.DEFINE_integer("chunk_size", 256, "Images per work item.")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out_dir.")
flags.DEFINE_float("log_every", 5.0, "Seconds between progress lines.")
flags.DEFINE_enum(
    "restore", "none", ("none",) + restore_lib.RESTORERS,
    "Restore each degraded image before writing it: deblur_gt "
    "(Krishnan-Fergus deconvolution with the image's true kernel; needs a "
    "setting with blur), deblock (POCS deblocking with the image's JPEG "
    "quality; needs a setting with JPEG), or none.")

flags.mark_flags_as_required(["source", "setting", "out_dir"])



def _fail(message):
    """Prints a one-line error and exits with status 2 (as every CLI)."""
    print(message, file=sys.stderr)
    sys.exit(2)

def _valid_setting(name):
    return name is None or name in settings_lib.SETTINGS


flags.register_validator(
    "setting", _valid_setting,
    message="--setting must be one of: " + ", ".join(settings_lib.SETTINGS))
flags.register_validator(
    "resolution", lambda v: v is not None and v >= 8,
    message="--resolution must be an integer >= 8")
flags.register_validator(
    "seed", lambda v: v is not None and v >= 0,
    message="--seed must be a non-negative integer")
flags.register_validator(
    "source_seed", lambda v: v is not None and v >= 0,
    message="--source_seed must be a non-negative integer")
flags.register_validator(
    "workers", lambda v: v is not None and 1 <= v <= 256,
    message="--workers must be in [1, 256]")
flags.register_validator(
    "limit", lambda v: v is None or v >= 1,
    message="--limit must be a positive integer")
flags.register_validator(
    "shards", lambda v: v is not None and v >= 1,
    message="--shards must be a positive integer")
flags.register_validator(
    "chunk_size", lambda v: v is not None and v >= 1,
    message="--chunk_size must be a positive integer")
flags.register_validator(
    "log_every", lambda v: v is not None and v > 0,
    message="--log_every must be positive")
flags.register_validator(
    "out_dir", lambda v: v is None or v.strip() != "",
    message="--out_dir must not be empty")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    setting = settings_lib.get_setting(FLAGS.setting)
    out_dir = FLAGS.out_dir
    if (os.path.isdir(out_dir) and os.listdir(out_dir)
            and not FLAGS.overwrite):
        _fail(f"error: --out_dir {out_dir} is not empty "
                 "(pass --overwrite to replace it)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        _fail(f"error: --out_dir {out_dir} exists and is not a directory")
    if FLAGS.resolution != setting.resolution:
        print(f"warning: setting {setting.name} is defined for "
              f"{setting.resolution} px ({setting.dataset}); building at "
              f"{FLAGS.resolution} px with K = {setting.kernel_size}",
              file=sys.stderr)
    restore = None if FLAGS.restore == "none" else FLAGS.restore
    if restore is not None:
        try:
            paper_use = restore_lib.check_restorable(setting, restore)
        except ValueError as e:
            _fail(f"error: --restore={restore}: {e}")
        if not paper_use:
            print(f"warning: setting {setting.name} has degradations "
                  f"besides the one --restore={restore} undoes; they stay "
                  "in the images", file=sys.stderr)
    try:
        images, labels, desc = builder.load_source(
            FLAGS.source, FLAGS.resolution, limit=FLAGS.limit,
            seed=FLAGS.source_seed)
    except (ValueError, OSError, data.DataError) as e:
        _fail(f"error: cannot load --source {FLAGS.source}: {e}")
    if FLAGS.shards > len(images):
        _fail(f"error: --shards={FLAGS.shards} exceeds the number of "
                 f"images ({len(images)})")
    what = "degrade" if restore is None else "degrade+restore"
    print(f"[{what} {setting.name}] {len(images)} images of "
          f"{images.shape[1]}x{images.shape[2]} from {desc} -> {out_dir}"
          + ("" if restore is None else f" (restore: {restore})"),
          file=sys.stderr, flush=True)
    restore_fn = restore_info = None
    if restore is not None:
        def restore_fn(degraded, params):
            return restore_lib.restore_images(restore, degraded, params)
        restore_info = {"name": restore,
                        **restore_lib.describe(restore)}
    try:
        summary = builder.build_degraded_dataset(
            images, labels, setting, out_dir, seed=FLAGS.seed,
            workers=FLAGS.workers, shards=FLAGS.shards,
            chunk_size=FLAGS.chunk_size, overwrite=FLAGS.overwrite,
            source=desc, log_every=FLAGS.log_every, restore=restore_fn,
            restore_info=restore_info)
    except (ValueError, FileExistsError) as e:
        _fail(f"error: {e}")
    counts = summary["counts"]
    print(f"[{what} {setting.name}] done: {counts} in "
          f"{summary['wall_time_s']:.1f} s "
          f"({summary['images_per_s']:.1f} img/s)", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
