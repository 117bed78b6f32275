"""Builds static degraded data sets as sharded TFRecords (library side).

`tools/make_degraded_dataset.py` is the command-line entry point; this module
holds the logic so tests can call it directly:

    images, labels, desc = load_source("builtin:skimage_patches", 32)
    summary = build_degraded_dataset(images, labels, "N", out_dir, seed=0)

Output (format in docs/design.md): `<out_dir>/data.tfrecord-SSSSS-of-NNNNN`
(shard s holds the contiguous index range [s N / S, (s + 1) N / S), records
in index order) and `<out_dir>/summary.json`. Everything is first written to
a temporary sibling directory that is renamed into place at the end.

Determinism: the N images are cut into fixed index-aligned chunks
([0, c), [c, 2c), ...) that a thread pool degrades in any order; records are
written strictly in index order, and each image's degradation depends only on
(seed, setting, N, index) (see `settings`), so the record bytes do not depend
on `workers` (and, as tested, not on `chunk_size` either).
"""

import collections
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from bncr_tf.degradations import kernels as blur_lib
from bncr_tf.degradations import settings as settings_lib

SHARD_PATTERN = "data.tfrecord-{:05d}-of-{:05d}"
SUMMARY_NAME = "summary.json"


def feature_spec(kernel_size):
    """`tf.io.parse_single_example` spec of one record (docs/design.md)."""
    f, i, s = tf.float32, tf.int64, tf.string
    fixed = tf.io.FixedLenFeature
    return {
        "image": fixed([], s),
        "index": fixed([], i),
        "label": fixed([], i),
        "blur_type": fixed([], s),
        "blur_radius": fixed([], f),
        "motion_length": fixed([], f),
        "motion_exposure": fixed([], f),
        "motion_expl": fixed([], f),
        "kernel": fixed([kernel_size * kernel_size], f),
        "noise_applied": fixed([], i),
        "noise_shot": fixed([], f),
        "noise_read": fixed([], f),
        "jpeg_quality": fixed([], i),
        "setting": fixed([], s),
        "seed": fixed([], i),
    }


def parse_example(serialized, kernel_size):
    """Parses one serialized record.

    Args:
        serialized: scalar string tensor or bytes.
        kernel_size: K of the setting.

    Returns:
        Dict of tensors as in `feature_spec`, plus `image` decoded to uint8
        `[H, W, 3]` and `kernel` reshaped to `[K, K]`.
    """
    ex = tf.io.parse_single_example(serialized, feature_spec(kernel_size))
    ex["image"] = tf.io.decode_png(ex["image"], channels=3)
    ex["kernel"] = tf.reshape(ex["kernel"], [kernel_size, kernel_size])
    return ex


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _float(v):
    return tf.train.Feature(float_list=tf.train.FloatList(
        value=np.asarray(v, np.float32).reshape(-1).tolist()))


def serialize_record(png, params, j, label):
    """Serializes image j of a chunk (deterministic protobuf bytes)."""
    feats = {
        "image": _bytes(png),
        "index": _int(params.index[j]),
        "label": _int(label),
        "blur_type": _bytes(
            settings_lib.BLUR_TYPES[params.blur_type[j]].encode()),
        "blur_radius": _float(params.blur_radius[j]),
        "motion_length": _float(params.motion_length[j]),
        "motion_exposure": _float(params.motion_exposure[j]),
        "motion_expl": _float(params.motion_expl[j]),
        "kernel": _float(params.kernel[j]),
        "noise_applied": _int(params.noise_applied[j]),
        "noise_shot": _float(params.noise_shot[j]),
        "noise_read": _float(params.noise_read[j]),
        "jpeg_quality": _int(params.jpeg_quality[j]),
        "setting": _bytes(params.setting.encode()),
        "seed": _int(params.seed),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


def degrade_chunk(setting, clean_u8, start, num_images, seed):
    """Degrades the images with indices [start, start + n) of an N-image set.

    Args:
        setting: `Setting` or name.
        clean_u8: uint8 `[n, H, W, 3]`, clean images start .. start + n - 1.
        start: index of the first image.
        num_images: N.
        seed: builder seed.

    Returns:
        (degraded uint8 `[n, H, W, 3]`, `DegradationParams`).
    """
    n = len(clean_u8)
    params = settings_lib.sample_params(
        setting, np.arange(start, start + n), num_images, seed,
        clean_u8.shape[1:3])
    return settings_lib.apply_params(clean_u8, params), params


def _process_chunk(setting, clean_u8, labels, start, num_images, seed,
                   restore=None):
    """Worker: degrade, (restore,) PNG-encode and serialize one chunk."""
    degraded, params = degrade_chunk(setting, clean_u8, start, num_images,
                                     seed)
    if restore is not None:
        degraded = restore(degraded, params)
    records = [serialize_record(tf.io.encode_png(degraded[j]).numpy(),
                                params, j, labels[j])
               for j in range(len(degraded))]
    entropy = blur_lib.kernel_entropy(params.kernel).numpy()
    params.noise_eps = None  # large and not needed by the summary
    return records, params, entropy


class _Stats:
    """Accumulates the per-stage statistics written to summary.json."""

    def __init__(self):
        self.blur_type = collections.Counter()
        self.quality = collections.Counter()
        self.entropy = collections.defaultdict(list)
        self.exposure = collections.Counter()
        self.noise_std_mid = []
        self.noised = 0
        self.n = 0

    def add(self, params, entropy):
        self.n += len(params)
        for code, name in enumerate(settings_lib.BLUR_TYPES):
            sel = params.blur_type == code
            self.blur_type[name] += int(sel.sum())
            if code:
                self.entropy[name].extend(entropy[sel].tolist())
        for t in params.motion_exposure[params.blur_type == 2]:
            self.exposure[f"{float(t):g}"] += 1
        for q in params.jpeg_quality[params.jpeg_quality > 0]:
            self.quality[int(q)] += 1
        on = params.noise_applied
        self.noised += int(on.sum())
        self.noise_std_mid.extend((255.0 * np.sqrt(
            params.noise_read[on].astype(np.float64)
            + 0.5 * params.noise_shot[on])).tolist())

    @staticmethod
    def _describe(values):
        if not values:
            return None
        v = np.asarray(values, np.float64)
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        return {"count": int(v.size), "mean": float(v.mean()),
                "std": float(v.std()), "min": float(v.min()),
                "p5": float(p5), "median": float(p50), "p95": float(p95),
                "max": float(v.max())}

    def as_dict(self):
        blurred = self.n - self.blur_type["none"]
        all_entropy = self.entropy["disk"] + self.entropy["motion"]
        qs = sorted(self.quality)
        return {
            "counts": {
                "images": self.n,
                "blur": blurred,
                "blur_disk": self.blur_type["disk"],
                "blur_motion": self.blur_type["motion"],
                "noise": self.noised,
                "jpeg": sum(self.quality.values()),
            },
            "blur_type_counts": dict(self.blur_type),
            "motion_exposure_counts": dict(sorted(self.exposure.items())),
            "kernel_entropy_nats": {
                "blurred": self._describe(all_entropy),
                "disk": self._describe(self.entropy["disk"]),
                "motion": self._describe(self.entropy["motion"]),
            },
            "noise_std_at_half_per255": self._describe(self.noise_std_mid),
            "jpeg_quality_histogram": {str(q): self.quality[q] for q in qs},
        }


def _fmt_time(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _check_out_dir(out_dir, overwrite):
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        if os.listdir(out_dir) and not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; pass overwrite=True (--overwrite)")


def build_degraded_dataset(images, labels, setting, out_dir, seed=0,
                           workers=1, shards=1, chunk_size=256,
                           overwrite=False, source="", progress=True,
                           log_every=5.0, stream=None, restore=None,
                           restore_info=None):
    """Degrades clean images and writes sharded TFRecords + summary.json.

    Args:
        images: uint8 `[N, H, W, 3]` clean images (array-like supporting
            slicing, e.g. a numpy memmap).
        labels: int `[N]` labels, or None (-1 is stored).
        setting: `Setting` or name.
        out_dir: output directory; must be absent or empty unless
            `overwrite`.
        seed: builder seed, int >= 0.
        workers: number of threads; does not change the output.
        shards: number of TFRecord files (1 <= shards <= N).
        chunk_size: images per work item.
        overwrite: replace a non-empty `out_dir`.
        source: free-text description of the clean source (summary only).
        progress: print progress lines to `stream` (default stderr).
        log_every: seconds between progress lines.
        stream: file object for progress lines.
        restore: optional callable (degraded uint8 `[n, H, W, 3]`,
            `DegradationParams`) -> uint8 `[n, H, W, 3]` applied to each
            chunk before encoding (the restoration baselines,
            `bncr_tf.baselines.restore`); the metadata stay those of the
            degradation.
        restore_info: dict describing `restore`, stored in summary.json as
            "restore".

    Returns:
        The summary dict (also written to `<out_dir>/summary.json`).
    """
    setting = settings_lib.get_setting(setting)
    stream = sys.stderr if stream is None else stream
    num = len(images)
    if num < 1:
        raise ValueError("no images to degrade")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3], got {images.dtype} "
            f"{images.shape}")
    height, width = images.shape[1:3]
    if min(height, width) <= setting.kernel_size // 2:
        raise ValueError(f"images of {height}x{width} are too small for "
                         f"{setting.kernel_size}x{setting.kernel_size} kernels")
    labels = (np.full(num, -1, np.int64) if labels is None
              else np.asarray(labels, np.int64))
    if labels.shape != (num,):
        raise ValueError("labels must have one entry per image")
    if not 1 <= shards <= num:
        raise ValueError(f"shards must be in [1, {num}], got {shards}")
    if workers < 1 or chunk_size < 1:
        raise ValueError("workers and chunk_size must be >= 1")
    seed = settings_lib._check_seed(seed)  # pylint: disable=protected-access
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-",
                               dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp makes it 0700
    t0 = time.time()
    stats = _Stats()
    try:
        shard_info = _write_shards(images, labels, setting, tmp_dir, seed,
                                   workers, shards, chunk_size, progress,
                                   log_every, stream, stats, t0, restore)
        wall = time.time() - t0
        summary = {
            "setting": setting.name,
            "setting_id": setting.setting_id,
            "description": setting.description,
            "seed": seed,
            "resolution": int(height),
            "image_shape": [int(height), int(width), 3],
            "kernel_size": setting.kernel_size,
            "num_images": num,
            "source": source,
            "shards": shard_info,
            **stats.as_dict(),
            "wall_time_s": round(wall, 3),
            "images_per_s": round(num / max(wall, 1e-9), 2),
            "workers": workers,
            "chunk_size": chunk_size,
        }
        if restore is not None:
            summary["restore"] = dict(restore_info or {})
        with open(os.path.join(tmp_dir, SUMMARY_NAME), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=False)
            f.write("\n")
        _move_into_place(tmp_dir, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return summary


def _write_shards(images, labels, setting, tmp_dir, seed, workers, shards,
                  chunk_size, progress, log_every, stream, stats, t0,
                  restore=None):
    """Runs the thread pool and writes records in index order."""
    num = len(images)
    bounds = [s * num // shards for s in range(shards + 1)]
    names = [SHARD_PATTERN.format(s, shards) for s in range(shards)]
    starts = list(range(0, num, chunk_size))
    shard_info = [{"file": names[s], "first_index": bounds[s],
                   "num_records": bounds[s + 1] - bounds[s]}
                  for s in range(shards)]
    shard, writer = 0, tf.io.TFRecordWriter(os.path.join(tmp_dir, names[0]))
    done, last_log = 0, t0

    def submit(pool, start):
        stop = min(start + chunk_size, num)
        return pool.submit(_process_chunk, setting,
                           np.ascontiguousarray(images[start:stop]),
                           labels[start:stop], start, num, seed, restore)

    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            pending = collections.deque()
            next_chunk = 0
            while next_chunk < len(starts) or pending:
                while next_chunk < len(starts) and len(pending) < 2 * workers:
                    pending.append(submit(pool, starts[next_chunk]))
                    next_chunk += 1
                records, params, entropy = pending.popleft().result()
                stats.add(params, entropy)
                for index, record in zip(params.index, records):
                    while index >= bounds[shard + 1]:
                        writer.close()
                        shard += 1
                        writer = tf.io.TFRecordWriter(
                            os.path.join(tmp_dir, names[shard]))
                    writer.write(record)
                done += len(records)
                now = time.time()
                if progress and (now - last_log >= log_every or done == num):
                    rate = done / max(now - t0, 1e-9)
                    eta = (num - done) / max(rate, 1e-9)
                    what = "degrade+restore" if restore else "degrade"
                    print(f"[{what} {setting.name}] {done}/{num} images "
                          f"({100.0 * done / num:.1f}%), {rate:.1f} img/s, "
                          f"elapsed {_fmt_time(now - t0)}, "
                          f"ETA {_fmt_time(eta)}", file=stream, flush=True)
                    last_log = now
    finally:
        writer.close()
    return shard_info


def _move_into_place(tmp_dir, out_dir, overwrite):
    """Atomically renames tmp_dir to out_dir (replacing it if allowed)."""
    if os.path.exists(out_dir):
        if os.listdir(out_dir):
            if not overwrite:
                raise FileExistsError(f"{out_dir} became non-empty")
            old = tempfile.mkdtemp(
                prefix=f".{os.path.basename(out_dir)}.old-",
                dir=os.path.dirname(out_dir))
            os.rename(out_dir, os.path.join(old, "d"))
            os.rename(tmp_dir, out_dir)
            shutil.rmtree(old, ignore_errors=True)
            return
        os.rmdir(out_dir)
    os.rename(tmp_dir, out_dir)


def load_source(spec, resolution, limit=None, seed=0):
    """Loads clean uint8 images for the builder.

    Args:
        spec: "npy:<file>" (a uint8 `[N, R, R, 3]` .npy, labels -1) or any
            source spec of `bncr_tf.data.load_clean_uint8` (for example
            "tfds:cifar10:train", a folder, "builtin:skimage_patches").
        resolution: R; npy images must already have this size.
        limit: keep only the first `limit` images (None: all).
        seed: seed of the source itself (only builtin:skimage_patches uses
            it), passed to `bncr_tf.data.load_clean_uint8`; unrelated to the
            degradation seed.

    Returns:
        (uint8 `[N, R, R, 3]`, int64 `[N]` labels, description string).

    Raises:
        ValueError: a bad npy file; `bncr_tf.data.DataError` for other
            sources.
    """
    if spec.startswith("npy:"):
        path = spec[len("npy:"):]
        images = np.load(path, mmap_mode="r", allow_pickle=False)
        if limit is not None:
            images = images[:limit]
        if (images.dtype != np.uint8 or images.ndim != 4
                or images.shape[1:] != (resolution, resolution, 3)):
            raise ValueError(
                f"{path}: expected uint8 [N, {resolution}, {resolution}, 3], "
                f"got {images.dtype} {images.shape}")
        return np.asarray(images), np.full(len(images), -1, np.int64), spec
    from bncr_tf import data  # pylint: disable=import-outside-toplevel
    images, labels = data.load_clean_uint8(spec, resolution, limit=limit,
                                           seed=seed)
    return images, np.asarray(labels, np.int64), spec
