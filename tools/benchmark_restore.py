"""Measures a restorer's inference throughput (images/s): UNIR, DeblurGAN
or DeblurGAN-v2 (--variant).

Example (the numbers in docs/performance.md, "UNIR restorer"):

    python tools/benchmark_restore.py --width=8 --sizes=32,128,512

The restorer is `bncr_tf.networks.restorer.Restorer` with ngf = --width,
randomly initialised (throughput does not depend on the weights), or the
restorer of --model (a restoration run directory). It runs in inference
mode inside one `tf.function` per size (dynamic H, W as in the export) on
uniform random images. Each size is run --warmup times untimed, then
--repeats times; the median wall time gives images/s. The batch is
--batch images at 32 px, and batch * (32 / size)^2 (at least 1) above, so
every call processes about the same number of pixels. Prints a markdown
table, with the CPU's AVX-512 extensions, and writes --out (JSON) if given.
"""

import json
import os
import platform
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("width", 8, "ngf of a random restorer.", lower_bound=1)
flags.DEFINE_string("variant", "unir", "Restorer of a random run: unir, "
                    "deblurgan or deblurganv2 (its --width).")
flags.DEFINE_string("model", "", "A restoration run directory instead.")
flags.DEFINE_string("sizes", "32,128,512", "Image sizes (square).")
flags.DEFINE_integer("batch", 16, "Images per call at 32 px.", lower_bound=1)
flags.DEFINE_integer("warmup", 1, "Untimed calls per size.", lower_bound=0)
flags.DEFINE_integer("repeats", 3, "Timed calls per size.", lower_bound=1)
flags.DEFINE_string("out", "", "Write the results as JSON here.")


def cpu_isa():
    """Sorted AVX-512 extensions of this CPU (from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    return sorted(set(re.findall(r"avx512[a-z_0-9]*", text)))


def batch_for(size, batch):
    return max(1, int(batch * (32 / size) ** 2))


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    from bncr_tf import models
    from bncr_tf import runs
    from bncr_tf.config import TrainConfig
    if FLAGS.model:
        config, g, _ = runs.load_restorer(FLAGS.model)
        width = config.width
    else:
        width = FLAGS.width
        g = models.build_restorer(TrainConfig(variant=FLAGS.variant,
                                              width=width))

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def restore(x):
        return g(x, training=False)

    rows = []
    for size in (int(s) for s in FLAGS.sizes.split(",")):
        b = batch_for(size, FLAGS.batch)
        x = tf.constant(np.random.default_rng(0).uniform(
            -1, 1, (b, size, size, 3)).astype(np.float32))
        for _ in range(FLAGS.warmup):
            restore(x).numpy()
        times = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            restore(x).numpy()
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        rows.append({"size": size, "batch": b, "seconds": t,
                     "images_per_s": b / t,
                     "megapixels_per_s": b * size * size / t / 1e6})
    info = {"variant": FLAGS.model and config.variant or FLAGS.variant,
            "width": width, "threads": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "avx512": cpu_isa(), "tensorflow": tf.__version__, "rows": rows}
    print(f"restorer {info['variant']} width={width}; {os.cpu_count()} "
          f"CPU threads; AVX-512: "
          f"{' '.join(info['avx512']) or 'none'}; TensorFlow "
          f"{tf.__version__}\n")
    print("| size | batch | images/s | Mpixel/s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['batch']} | {r['images_per_s']:.3g} | "
              f"{r['megapixels_per_s']:.3g} |")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    app.run(main)
