"""Measures the throughput (images/s) of the restoration baselines.

Example (the numbers in docs/performance.md, "Restoration baselines"):

    python tools/benchmark_restoration.py --sizes=32,128 --repeats=5

For each size, `builtin:skimage_patches` are degraded by setting D (blur;
per-image disk or motion kernels) or J (JPEG q in [60, 100]) with the
setting's kernel size at that size (7 at 32 px, 11 at 128 px, as the
builder does), and restored by `bncr_tf.baselines.restore.restore_images`
("deblur_gt": Krishnan-Fergus with the true kernels; "deblock": POCS
deblocking), in one process with scipy.fft on one thread. Each batch is
restored --warmup times untimed, then --repeats times; the median wall time
is reported as images/s. The batch is --batch images at 32 px and a quarter
of that at 128 px. The output is a markdown table on stdout and
<out>.json if --out is given.
"""

import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/benchmark_restoration.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from bncr_tf import data  # noqa: E402
from bncr_tf.baselines import restore as restore_lib  # noqa: E402
from bncr_tf.degradations import builder  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_list("sizes", ["32", "128"], "Square image sizes (pixels).")
flags.DEFINE_integer("batch", 256, "Images per batch at 32 px (a quarter "
                     "of it at 128 px).")
flags.DEFINE_integer("warmup", 1, "Untimed calls before timing.")
flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")
flags.DEFINE_string("out", None, "Optional JSON output path.")

CASES = (("deblur_gt", "D"), ("deblock", "J"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    rows = []
    for size in (int(s) for s in FLAGS.sizes):
        batch = FLAGS.batch if size <= 32 else max(1, FLAGS.batch // 4)
        clean, _ = data.load_clean_uint8(
            f"builtin:skimage_patches:count={batch}", size, seed=3)
        for restore, setting in CASES:
            # The builder's kernel size at this resolution (7 / 11).
            degraded, params = builder.degrade_chunk(
                setting if size <= 32 else f"ffhq_{setting}", clean, 0,
                batch, 0)
            for _ in range(FLAGS.warmup):
                restore_lib.restore_images(restore, degraded, params)
            times = []
            for _ in range(FLAGS.repeats):
                t0 = time.perf_counter()
                restore_lib.restore_images(restore, degraded, params)
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            rows.append({"restore": restore, "setting": setting,
                         "size": size, "batch": batch,
                         "ms_per_batch": 1e3 * median,
                         "images_per_s": batch / median,
                         "times_s": times})
            print(f"[bench] {restore} {size} px: {batch / median:.1f} img/s",
                  file=sys.stderr, flush=True)
    print("| restorer | setting | size | batch | ms / batch | images / s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['restore']} | {r['setting']} | {r['size']} | "
              f"{r['batch']} | {r['ms_per_batch']:.0f} | "
              f"{r['images_per_s']:,.1f} |")
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)),
                    exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump({"python": platform.python_version(),
                       "load_average": os.getloadavg(), "rows": rows}, f,
                      indent=2)
            f.write("\n")


if __name__ == "__main__":
    app.run(main)
