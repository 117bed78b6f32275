"""Measures the throughput (images/s) of the degradation operators.

Example:

    python tools/benchmark_degradations.py --batch=64 --sizes=32,128 \\
        --repeats=20 --warmup=3

Benchmarks (select with --benchmarks, comma separated):

* `diff_jpeg_fwd`: psi^g forward (`diff_jpeg`, tf.function).
* `diff_jpeg_fwd_bwd`: psi^g forward plus gradients w.r.t. images and q.
* `jpeg_compress`: real libjpeg encode + accurate decode (data side).
* `blur`: `bncr_tf.degradations.kernels.blur` with per-image K x K kernels
  (K = 7 at <= 32 px, 11 above), skipped with a note if the module is
  missing.

Each benchmark is one function `bench_<name>(images, quality, args)` that
returns a zero-argument callable running one batch; add new ones (for
example a "setting-N data path") to `BENCHMARKS`. Every callable is run
--warmup times (tracing, allocation), then timed --repeats times; the
median wall time per batch is reported as images/s. Inputs are synthetic
smooth colour images with mild noise (a fixed seed), float32 in [0, 1], and
qualities uniform in [60, 100].
"""

import importlib
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/benchmark_degradations.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bncr_tf.degradations import jpeg  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_list(
    "benchmarks",
    "diff_jpeg_fwd,diff_jpeg_fwd_bwd,jpeg_compress,blur,setting_n_data",
    "Benchmarks to run, in order.")
flags.DEFINE_list("sizes", ["32", "128"], "Square image sizes (pixels).")
flags.DEFINE_integer("batch", 64, "Images per batch.")
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.")
flags.DEFINE_integer("repeats", 20, "Timed calls; the median is reported.")
flags.DEFINE_enum("rounding", "ste", list(jpeg.ROUNDING_MODES),
                  "Rounding mode for diff_jpeg.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic inputs.")


class Skip(Exception):
    """Raised by a benchmark that cannot run here (reason in the message)."""


def make_inputs(batch, size, seed):
    """Synthetic smooth images and qualities.

    Args:
        batch: number of images B.
        size: image side S.
        seed: numpy seed.

    Returns:
        (images [B, S, S, 3] float32 in [0, 1], quality [B] float32 in
        [60, 100]) as tensors.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(size, dtype=np.float32) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    img = np.full((batch, size, size, 3), 0.5, np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(0.5, 4.0, (2, batch, 1, 1, 1))
        ph = rng.uniform(0, 2 * np.pi, (batch, 1, 1, 3))
        amp = rng.uniform(0.05, 0.15, (batch, 1, 1, 3))
        img += amp * np.sin(2 * np.pi * (fx * xx[..., None]
                                         + fy * yy[..., None]) + ph)
    img += rng.normal(0.0, 0.02, img.shape)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    quality = rng.uniform(60.0, 100.0, batch).astype(np.float32)
    return tf.constant(img), tf.constant(quality)


def bench_diff_jpeg_fwd(images, quality, args):
    """psi^g forward pass."""
    fn = tf.function(lambda x, q: jpeg.diff_jpeg(x, q, args["rounding"]))
    return lambda: fn(images, quality)


def bench_diff_jpeg_fwd_bwd(images, quality, args):
    """psi^g forward pass and gradients w.r.t. images and quality."""

    @tf.function
    def step(x, q):
        with tf.GradientTape() as tape:
            tape.watch([x, q])
            y = jpeg.diff_jpeg(x, q, args["rounding"])
            loss = tf.reduce_mean(tf.square(y - x))
        return tape.gradient(loss, [x, q])

    return lambda: step(images, quality)


def bench_jpeg_compress(images, quality, args):
    """Real libjpeg compression, per-image quality (tf.function)."""
    del args
    fn = tf.function(jpeg.jpeg_compress)
    return lambda: fn(images, quality)


def _box_kernels(batch, ksize, seed):
    """Random positive, unit-sum, centred [B, K, K] float32 kernels."""
    rng = np.random.default_rng(seed)
    k = rng.uniform(0.0, 1.0, (batch, ksize, ksize)).astype(np.float32)
    k = 0.5 * (k + k[:, ::-1, ::-1])
    return tf.constant(k / k.sum(axis=(1, 2), keepdims=True))


def bench_blur(images, quality, args):
    """Per-image blur, K = 7 at <= 32 px and 11 above (tf.function)."""
    del quality
    try:
        blur_lib = importlib.import_module("bncr_tf.degradations.kernels")
    except ImportError as e:
        raise Skip(f"bncr_tf.degradations.kernels not importable ({e})")
    if not hasattr(blur_lib, "blur"):
        raise Skip("bncr_tf.degradations.kernels has no blur()")
    ksize = 7 if images.shape[1] <= 32 else 11
    kernels = _box_kernels(images.shape[0], ksize, args["seed"])
    fn = tf.function(blur_lib.blur)
    return lambda: fn(images, kernels)


def bench_setting_n(images, quality, args):
    """The data side of setting (N) (blur D -> camera noise -> JPEG J, per
    image, with sampling of every parameter and motion trajectory), exactly
    as the dataset builder and on-the-fly loading run it: one index-aligned
    chunk of `batch` images of an N = 50,000-image set."""
    del quality
    from bncr_tf.degradations import builder
    u8 = np.asarray(np.clip(np.rint(images.numpy() * 255.0), 0, 255),
                    np.uint8)
    setting = "N" if images.shape[1] <= 32 else "ffhq_P"
    return lambda: builder.degrade_chunk(setting, u8, 0, 50_000,
                                         args["seed"])[0]


BENCHMARKS = {
    "diff_jpeg_fwd": bench_diff_jpeg_fwd,
    "diff_jpeg_fwd_bwd": bench_diff_jpeg_fwd_bwd,
    "jpeg_compress": bench_jpeg_compress,
    "blur": bench_blur,
    "setting_n_data": bench_setting_n,
}


def _materialise(out):
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()


def time_callable(fn, warmup, repeats):
    """Median wall seconds of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        _materialise(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _materialise(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(names, sizes, batch, warmup, repeats, args):
    """Runs benchmarks and returns rows (name, size, batch, ms, img/s|note)."""
    rows = []
    for size in sizes:
        images, quality = make_inputs(batch, size, args["seed"])
        for name in names:
            try:
                fn = BENCHMARKS[name](images, quality, args)
            except Skip as e:
                rows.append((name, size, batch, None, f"skipped: {e}"))
                continue
            sec = time_callable(fn, warmup, repeats)
            rows.append((name, size, batch, 1e3 * sec, batch / sec))
    return rows


def format_rows(rows):
    """Markdown table of `run` rows."""
    lines = ["| benchmark | size | batch | ms / batch | images / s |",
             "| --- | --- | --- | --- | --- |"]
    for name, size, batch, ms, ips in rows:
        if ms is None:
            lines.append(f"| {name} | {size} | {batch} | - | {ips} |")
        else:
            lines.append(
                f"| {name} | {size} | {batch} | {ms:.1f} | {ips:,.0f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    unknown = [n for n in FLAGS.benchmarks if n not in BENCHMARKS]
    if unknown:
        raise app.UsageError(
            f"unknown benchmarks {unknown}; known: {list(BENCHMARKS)}")
    sizes = [int(s) for s in FLAGS.sizes]
    args = {"rounding": FLAGS.rounding, "seed": FLAGS.seed}
    print(f"# TF {tf.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, devices "
          f"{[d.device_type for d in tf.config.list_logical_devices()]}, "
          f"rounding={FLAGS.rounding}, warmup={FLAGS.warmup}, "
          f"repeats={FLAGS.repeats} (median)")
    rows = run(FLAGS.benchmarks, sizes, FLAGS.batch, FLAGS.warmup,
               FLAGS.repeats, args)
    print(format_rows(rows))


if __name__ == "__main__":
    app.run(main)
