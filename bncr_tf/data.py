"""Image sources for BNCR-GAN: parsing, decoding and training pipelines.

A data source is named by a spec string (see `parse_source`):

  tfds:<name>[:<split>]           a prepared TensorFlow Datasets dataset
  folder:<dir> or <dir>           a folder of images, scanned recursively
  tfrecord:<dir> or <dir> holding summary.json
                                  the degraded set written by
                                  tools/make_degraded_dataset.py
  builtin:skimage_patches[:count=N]
                                  crops of the colour photos that ship
                                  inside scikit-image (offline demo data)
  fashion_mnist:<split>[:<dir>]   Fashion-MNIST IDX files (Debian package
                                  dataset-fashion-mnist or
                                  $BNCR_FASHION_MNIST_DIR)

Every source is delivered as uint8 `[N, R, R, 3]` RGB at the requested
resolution R (`load_clean_uint8`, `iter_source_uint8`); `make_train_dataset`
turns it into float32 batches in [-1, 1) with the NR-GAN dequantisation.
User-facing problems raise `DataError` with a one-sentence message.
See docs/data.md for the user documentation.
"""

import dataclasses
import functools
import glob
import gzip
import importlib.util
import json
import logging
import math
import os
import re
import struct

import numpy as np
import tensorflow as tf

from bncr_tf.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
DEFAULT_MIN_IMAGE_SIZE = 8
# Image-folder files whose header declares more pixels than this are skipped
# ("too_large") before decoding: decoding needs about 26 bytes per pixel
# (16-bit PNG plus float32 copies), so a small file claiming 20000 x 20000
# (a decompression bomb) would otherwise take ~10 GB. 2**25 pixels admit
# 8K UHD (7680 x 4320) and 30-megapixel photos. Change it before loading.
MAX_IMAGE_PIXELS = 2 ** 25
DEFAULT_PATCH_COUNT = 1024
FASHION_MNIST_ENV = "BNCR_FASHION_MNIST_DIR"
# Where the Debian package dataset-fashion-mnist installs its IDX files
# (checked with `dpkg -L dataset-fashion-mnist`).
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# The natural colour photos among scikit-image's bundled sample images.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png",
                  "motorcycle_left.png", "motorcycle_right.png",
                  "rocket.jpg")
SUMMARY_FILE = "summary.json"
SHARD_GLOB = "data.tfrecord-*-of-*"

_SCHEMES = ("tfds", "folder", "tfrecord", "builtin", "fashion_mnist")
_BUILTINS = ("skimage_patches",)
_SPEC_HELP = ("expected tfds:NAME[:SPLIT], folder:DIR, tfrecord:DIR, "
              "builtin:skimage_patches[:count=N], fashion_mnist:SPLIT[:DIR] "
              "or an existing directory")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_EXAMPLES = 5


# --- Source specs -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed data source; build it with `parse_source`.

    Attributes:
      kind: one of "tfds", "folder", "tfrecord", "builtin", "fashion_mnist".
      name: TFDS dataset name or builtin name ("" otherwise).
      split: TFDS split (may contain slicing such as "train[:1000]") or
        Fashion-MNIST split "train" / "test" ("" otherwise).
      path: absolute directory for folder, tfrecord and fashion_mnist.
      count: number of patches for builtin:skimage_patches (0 otherwise).
    """

    kind: str
    name: str = ""
    split: str = ""
    path: str = ""
    count: int = 0

    def __str__(self):
        if self.kind == "tfds":
            return f"tfds:{self.name}:{self.split}"
        if self.kind == "builtin":
            return f"builtin:{self.name}:count={self.count}"
        if self.kind == "fashion_mnist":
            return f"fashion_mnist:{self.split}:{self.path}"
        return f"{self.kind}:{self.path}"


def parse_source(spec):
    """Parses a data source spec string (see the module docstring).

    A bare path is accepted when it is an existing directory: it is a
    TFRecord dataset when it holds summary.json and an image folder
    otherwise.

    Args:
      spec: the spec string, or a `Source` (returned unchanged).

    Returns:
      A `Source`.

    Raises:
      DataError: unknown scheme, malformed spec or missing path.
    """
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise DataError(f"empty data source {spec!r}: {_SPEC_HELP}")
    spec = os.fspath(spec).strip()
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in _SCHEMES:
        return _PARSERS[scheme](rest, spec)
    path = _expand(spec)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, SUMMARY_FILE)):
            return _parse_tfrecord(path, spec)
        return Source(kind="folder", path=path)
    if os.path.exists(path):
        raise DataError(f"data source {spec!r} is a file, not a directory")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", scheme):
        raise DataError(
            f"unknown data source scheme {scheme!r} in {spec!r}: "
            f"{_SPEC_HELP}")
    raise DataError(
        f"data source {spec!r} is not an existing directory or a known "
        f"scheme: {_SPEC_HELP}")


def _expand(path):
    return os.path.abspath(os.path.expanduser(path))


def _parse_tfds(rest, spec):
    name, _, split = rest.partition(":")
    if not name:
        raise DataError(f"missing dataset name in {spec!r}: expected "
                        f"tfds:NAME[:SPLIT], e.g. tfds:cifar10:train")
    return Source(kind="tfds", name=name, split=split or "train")


def _parse_folder(rest, spec):
    if not rest:
        raise DataError(f"missing directory in {spec!r}: expected folder:DIR")
    path = _expand(rest)
    if not os.path.exists(path):
        raise DataError(f"image folder {path} does not exist")
    if not os.path.isdir(path):
        raise DataError(f"image folder {path} is a file, not a directory")
    return Source(kind="folder", path=path)


def _parse_tfrecord(rest, spec):
    if not rest:
        raise DataError(f"missing directory in {spec!r}: expected "
                        f"tfrecord:DIR")
    path = _expand(rest)
    if not os.path.isdir(path):
        raise DataError(f"TFRecord dataset directory {path} does not exist")
    if not _shards(path):
        raise DataError(
            f"no {SHARD_GLOB} files in {path}; is it the output of "
            f"tools/make_degraded_dataset.py?")
    return Source(kind="tfrecord", path=path)


def _parse_builtin(rest, spec):
    name, _, options = rest.partition(":")
    if name not in _BUILTINS:
        raise DataError(f"unknown builtin source {name!r} in {spec!r}: "
                        f"available: {', '.join(_BUILTINS)}")
    count = DEFAULT_PATCH_COUNT
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key != "count" or not value.isdigit() or int(value) < 1:
            raise DataError(f"bad option {item!r} in {spec!r}: the only "
                            f"option is count=N with N >= 1")
        count = int(value)
    return Source(kind="builtin", name=name, count=count)


def _parse_fashion_mnist(rest, spec):
    split, _, directory = rest.partition(":")
    if split not in ("train", "test"):
        raise DataError(f"bad Fashion-MNIST split {split!r} in {spec!r}: "
                        f"expected fashion_mnist:train or fashion_mnist:test")
    if directory:
        path, origin = _expand(directory), "the spec"
    elif os.environ.get(FASHION_MNIST_ENV):
        path, origin = _expand(os.environ[FASHION_MNIST_ENV]), \
            f"${FASHION_MNIST_ENV}"
    else:
        path, origin = FASHION_MNIST_DEBIAN_DIR, "the Debian default"
    name = _fashion_files(split)[0]
    if _find_idx(path, name) is None:
        raise DataError(
            f"Fashion-MNIST file {name}[.gz] not found in {path} (from "
            f"{origin}); install the Debian package dataset-fashion-mnist "
            f"or set {FASHION_MNIST_ENV}")
    return Source(kind="fashion_mnist", split=split, path=path)


_PARSERS = {"tfds": _parse_tfds, "folder": _parse_folder,
            "tfrecord": _parse_tfrecord, "builtin": _parse_builtin,
            "fashion_mnist": _parse_fashion_mnist}


# --- Resizing and decoding (shared by all sources) --------------------------

def _resize_crop(image, resolution):
    """Shorter side -> resolution, then a centre crop.

    Bilinear (triangle) filter, antialiased when downscaling; identical to
    `tf.image.resize(..., "bilinear", antialias=True)` followed by a centre
    crop (and to Pillow's BILINEAR within one level), but the crop is folded
    into the resampling so very elongated images never materialise a huge
    intermediate.

    Args:
      image: [H, W, 3] float32 in [0, 255], H, W >= 1.
      resolution: output size R.

    Returns:
      [R, R, 3] float32 in [0, 255].
    """
    r = resolution
    shape = tf.shape(image, out_type=tf.int64)
    h, w = shape[0], shape[1]
    short = tf.minimum(h, w)
    # Rounded integer sizes of the resized image; the short side is R.
    nh = (2 * h * r + short) // (2 * short)
    nw = (2 * w * r + short) // (2 * short)
    top, left = (nh - r) // 2, (nw - r) // 2

    def resample():
        out = tf.raw_ops.ScaleAndTranslate(
            images=image[tf.newaxis],
            size=tf.constant([r, r], tf.int32),
            scale=tf.cast(tf.stack([nh / h, nw / w]), tf.float32),
            translation=-tf.cast(tf.stack([top, left]), tf.float32),
            kernel_type="triangle", antialias=True)
        return out[0]

    same = tf.logical_and(tf.equal(h, r), tf.equal(w, r))
    out = tf.cond(same, lambda: image, resample)
    return tf.ensure_shape(out, [r, r, 3])


def _to_uint8(image):
    """float32 in [0, 255] -> uint8, rounded half to even."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _to_rgb(image):
    """[H, W, C] with C in 1..4 -> [H, W, 3]: gray replicated, alpha dropped."""
    channels = tf.shape(image)[-1]
    return tf.cond(channels >= 3, lambda: image[..., :3],
                   lambda: tf.tile(image[..., :1], [1, 1, 3]))


def _decode_float(data):
    """Decodes image bytes to [H, W, 3] float32 in [0, 255].

    PNGs are decoded at 16 bits so 16-bit files are scaled exactly
    (v / 257); 8-bit PNGs come back as v * 257, i.e. unchanged. Other
    formats (JPEG, GIF first frame, BMP, WebP) are decoded at 8 bits.
    Grayscale is replicated, alpha dropped, palettes expanded.
    """
    def png():
        image = tf.io.decode_png(data, channels=3, dtype=tf.uint16)
        return tf.cast(image, tf.float32) / 257.0

    def other():
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                   expand_animations=False)
        return tf.cast(image, tf.float32)

    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    return tf.ensure_shape(tf.cond(is_png, png, other), [None, None, 3])


def _sniff(head):
    """True when the first bytes look like a supported image format."""
    return (head.startswith((b"\xff\xd8\xff", _PNG_MAGIC, b"GIF87a",
                             b"GIF89a", b"BM"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def _tf_message(error):
    """The readable part of a TF op error message."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return text.strip().splitlines()[0] if text.strip() else "decode error"


# --- Image folders ----------------------------------------------------------

_REASONS = {
    # key: (long description for the log, short phrase for DataError)
    "extension": ("extension is not one of " + "/".join(
        e[1:] for e in IMAGE_EXTENSIONS), "not an image extension"),
    "empty": ("empty file (0 bytes)", "empty"),
    "not_image": ("not an image (content is not JPEG, PNG, GIF, BMP or "
                  "WebP)", "not an image"),
    "corrupt": ("corrupt, truncated or undecodable image data", "corrupt"),
    "too_small": ("smaller than min_image_size ({min_size} px)",
                  "smaller than {min_size} px"),
    "too_large": ("header declares more than MAX_IMAGE_PIXELS ({max_pixels}) "
                  "pixels; not decoded", "larger than {max_pixels} pixels"),
    "unreadable": ("unreadable (operating system error)", "unreadable"),
}


@dataclasses.dataclass
class ScanReport:
    """What happened to every file of an image folder.

    Attributes:
      root: the folder (or the source description for other sources).
      found: number of files in the tree (all extensions).
      used: number of images delivered.
      not_examined: image files not decoded because `limit` was reached.
      min_image_size: the minimum side length in force, px.
      skipped: reason key -> number of files skipped for it. Keys:
        "extension", "empty", "not_image", "corrupt", "too_small",
        "too_large", "unreadable".
      examples: reason key -> the first few relative file names (with a
        short detail in parentheses where known).
    """

    root: str = ""
    found: int = 0
    used: int = 0
    not_examined: int = 0
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    skipped: dict = dataclasses.field(default_factory=dict)
    examples: dict = dataclasses.field(default_factory=dict)

    @property
    def num_skipped(self):
        return sum(self.skipped.values())

    def add_skip(self, reason, name, detail=None):
        """Counts one skipped file."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        names = self.examples.setdefault(reason, [])
        if len(names) < _MAX_EXAMPLES:
            names.append(f"{name} ({detail})" if detail else name)

    def _phrase(self, reason, long):
        text = _REASONS[reason][0 if long else 1]
        return text.format(min_size=self.min_image_size,
                           max_pixels=MAX_IMAGE_PIXELS)

    def _counts(self):
        return ", ".join(f"{n} {self._phrase(k, False)}"
                         for k, n in sorted(self.skipped.items(),
                                            key=lambda kv: (-kv[1], kv[0])))

    def summary_line(self):
        """One line: files found, used, skipped (by short reason)."""
        line = (f"image folder {self.root}: {self.found} files, "
                f"{self.used} used, {self.num_skipped} skipped")
        if self.skipped:
            line += f" ({self._counts()})"
        if self.not_examined:
            line += f", {self.not_examined} not examined (limit reached)"
        return line

    def reason_lines(self):
        """One line per skip reason with the first few file names."""
        lines = []
        for reason, count in sorted(self.skipped.items()):
            names = ", ".join(self.examples.get(reason, []))
            more = count - len(self.examples.get(reason, []))
            if more > 0:
                names += f", and {more} more"
            lines.append(f"skipped {count} file(s): "
                         f"{self._phrase(reason, True)}: {names}")
        return lines

    def log(self, log=None):
        """Logs the summary (INFO, or WARNING if files were skipped) and
        one WARNING line per reason."""
        log = log or logger
        level = logging.WARNING if self.skipped else logging.INFO
        log.log(level, "%s", self.summary_line())
        for line in self.reason_lines():
            log.warning("  %s", line)

    def failure_message(self):
        """The DataError sentence for a folder without usable images."""
        if self.found == 0:
            return (f"no usable images in {self.root}: the folder contains "
                    f"no files")
        return (f"no usable images in {self.root}: {self.found} files, all "
                f"unusable ({self._counts()})")

    def to_dict(self):
        return dataclasses.asdict(self)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f):
    """(width, height) from the SOF segment of an open JPEG, or None."""
    f.seek(2)
    for _ in range(4096):  # segments before the frame header
        byte = f.read(1)
        if byte != b"\xff":
            return None
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # no length field
        if marker in (0xD9, 0xDA):
            return None  # end of image or scan before any frame header
        raw = f.read(2)
        if len(raw) < 2:
            return None
        length = int.from_bytes(raw, "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            seg = f.read(5)
            if len(seg) < 5:
                return None
            return (int.from_bytes(seg[3:5], "big"),
                    int.from_bytes(seg[1:3], "big"))
        f.seek(length - 2, 1)
    return None


def _gif_size(f, head):
    """(width, height) of the first frame of an open GIF, or None.

    The decoder allocates frames, not the logical screen, so a screen size
    alone says nothing about memory.
    """
    flags = head[10]
    f.seek(13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 13))
    for _ in range(4096):  # extension blocks before the first frame
        kind = f.read(1)
        if kind == b"\x2c":  # image descriptor: left, top, width, height
            desc = f.read(8)
            return struct.unpack("<HH", desc[4:8]) if len(desc) == 8 \
                else None
        if kind != b"\x21" or not f.read(1):  # extension and its label
            return None
        while True:  # data sub-blocks up to the 0 terminator
            size = f.read(1)
            if not size:
                return None
            if size == b"\0":
                break
            f.seek(size[0], 1)
    return None


def image_header_size(path):
    """(width, height) declared by an image file's header, or None.

    Reads a few bytes (JPEG: walks the segments to the frame header); never
    decodes pixels. Knows PNG, JPEG, GIF (its first frame), BMP and WebP
    (VP8, VP8L, VP8X). None when the format is unknown, the header is cut
    off, or the file cannot be read: the decoder then decides.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR" \
                    and len(head) >= 24:
                return struct.unpack(">II", head[16:24])
            if head.startswith((b"GIF87a", b"GIF89a")) and len(head) >= 13:
                return _gif_size(f, head)
            if head.startswith(b"BM") and len(head) >= 26:
                if struct.unpack("<I", head[14:18])[0] == 12:
                    return struct.unpack("<HH", head[18:22])
                w, h = struct.unpack("<ii", head[18:26])
                return abs(w), abs(h)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP" \
                    and len(head) >= 30:
                chunk = head[12:16]
                if chunk == b"VP8X":
                    return (1 + int.from_bytes(head[24:27], "little"),
                            1 + int.from_bytes(head[27:30], "little"))
                if chunk == b"VP8L":
                    bits = int.from_bytes(head[21:25], "little")
                    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
                if chunk == b"VP8 ":
                    w, h = struct.unpack("<HH", head[26:30])
                    return w & 0x3FFF, h & 0x3FFF
                return None
            if head.startswith(b"\xff\xd8"):
                return _jpeg_size(f)
    except OSError:
        return None
    return None


def _list_files(root):
    """All files under root, as sorted relative POSIX paths."""
    names = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        rel = os.path.relpath(directory, root)
        for f in files:
            names.append(f if rel == "." else os.path.join(rel, f))
    return sorted(n.replace(os.sep, "/") for n in names)


def _load_file_fn(resolution, min_image_size):
    """(index, path) -> (index, too_small, [h, w], uint8 [R, R, 3])."""
    def load(index, path):
        image = _decode_float(tf.io.read_file(path))
        size = tf.shape(image)[:2]
        small = tf.reduce_min(size) < min_image_size
        out = tf.cond(
            small, lambda: tf.zeros([resolution, resolution, 3], tf.uint8),
            lambda: _to_uint8(_resize_crop(image, resolution)))
        return index, small, size, out
    return load


def _iter_folder(source, resolution, chunk_size, limit, min_image_size,
                 report):
    """Decodes an image folder; yields uint8 chunks and fills `report`."""
    root = source.path
    report.root, report.min_image_size = root, min_image_size
    names = _list_files(root)
    report.found = len(names)
    candidates = []
    for name in names:
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            report.add_skip("extension", name,
                            os.path.splitext(name)[1] or "no extension")
            continue
        size = image_header_size(os.path.join(root, name))
        if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
            report.add_skip("too_large", name, f"{size[0]}x{size[1]}")
            continue
        candidates.append(name)
    load = _load_file_fn(resolution, min_image_size)
    paths = [os.path.join(root, n) for n in candidates]
    buffer = []

    def accept(index, small, size, image):
        if small:
            report.add_skip("too_small", candidates[index],
                            f"{size[1]}x{size[0]}")
        else:
            buffer.append(image)
            report.used += 1

    def recover(index):
        # Re-decode eagerly a file the pipeline dropped, to record why.
        path = paths[index]
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            report.add_skip("unreadable", candidates[index], e.strerror)
            return
        if not head:
            report.add_skip("empty", candidates[index])
            return
        if not _sniff(head):
            report.add_skip("not_image", candidates[index])
            return
        try:
            _, small, size, image = load(tf.constant(index, tf.int64),
                                         tf.constant(path))
        except (tf.errors.OpError, ValueError) as e:
            report.add_skip("corrupt", candidates[index], _tf_message(e))
            return
        accept(index, bool(small), size.numpy(), image.numpy())

    def full():
        return limit is not None and report.used >= limit

    if paths:
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        ds = ds.ignore_errors().prefetch(tf.data.AUTOTUNE)
        # `expected` is the next index to account for; indices the
        # pipeline skipped over are failures to re-decode eagerly.
        expected = 0
        for index, small, size, image in ds.as_numpy_iterator():
            index = int(index)
            while expected < index and not full():
                recover(expected)
                expected += 1
                while len(buffer) >= chunk_size:
                    yield _chunk(buffer, chunk_size)
            if full():
                break
            accept(index, bool(small), size, image)
            expected = index + 1
            while len(buffer) >= chunk_size:
                yield _chunk(buffer, chunk_size)
            if full():
                break
        else:
            while expected < len(paths) and not full():
                recover(expected)
                expected += 1
                while len(buffer) >= chunk_size:
                    yield _chunk(buffer, chunk_size)
        report.not_examined = len(paths) - expected
    report.log()
    if report.used == 0:
        raise DataError(report.failure_message())
    if buffer:
        yield _chunk(buffer, len(buffer))


def _chunk(buffer, size):
    """Pops `size` images off the front of `buffer` as (images, labels)."""
    images = np.stack(buffer[:size])
    del buffer[:size]
    return images, np.full([size], -1, np.int64)


def load_image_folder(path, resolution, limit=None,
                      min_image_size=DEFAULT_MIN_IMAGE_SIZE):
    """Loads an image folder and returns the scan report with it.

    Args:
      path: the folder (scanned recursively).
      resolution: output size R.
      limit: stop after this many usable images (None: all).
      min_image_size: images whose shorter side is below this (px) are
        skipped with reason "too_small".

    Returns:
      (images uint8 [N, R, R, 3], labels int64 [N] all -1, ScanReport).

    Raises:
      DataError: missing folder, or no usable image in it.
    """
    report = ScanReport()
    images, labels = load_clean_uint8(
        f"folder:{path}", resolution, limit=limit,
        min_image_size=min_image_size, report=report)
    return images, labels, report


# --- TFDS -------------------------------------------------------------------

def _tfds_dataset(source, resolution):
    """A tf.data.Dataset of (uint8 [R, R, 3], int64 label) in split order."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("tfds: sources need the tensorflow-datasets "
                        "package (pip install tensorflow-datasets)") from None
    data_dir = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    try:
        ds = tfds.load(source.name, split=source.split, shuffle_files=False,
                       download=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"TFDS has no dataset named {source.name!r}") \
            from None
    except AssertionError:
        raise DataError(
            f"TFDS dataset {source.name!r} is not prepared in {data_dir}; "
            f"prepare it once with network access (tfds build "
            f"{source.name}) and copy it there or set TFDS_DATA_DIR") \
            from None
    except (ValueError, KeyError, tf.errors.OpError) as e:
        raise DataError(f"cannot read TFDS split {source.split!r} of "
                        f"{source.name!r}: {_tf_message(e)}") from None
    spec = ds.element_spec
    if not isinstance(spec, dict) or "image" not in spec:
        raise DataError(f"TFDS dataset {source.name!r} has no 'image' "
                        f"feature")

    def convert(example):
        image = _to_rgb(example["image"])
        image = tf.image.convert_image_dtype(image, tf.uint8)
        image = _resize_crop(tf.cast(image, tf.float32), resolution)
        label = tf.cast(example.get("label", -1), tf.int64)
        return _to_uint8(image), tf.reshape(label, [])

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


# --- TFRecord datasets written by tools/make_degraded_dataset.py ------------

def _shards(directory):
    return sorted(glob.glob(os.path.join(directory, SHARD_GLOB)))


def read_degraded_summary(directory):
    """Reads `summary.json` of a degraded dataset ({} when absent).

    Raises:
      DataError: the file exists but is not valid JSON.
    """
    path = os.path.join(directory, SUMMARY_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _check_tfrecord_resolution(source, resolution):
    stored = read_degraded_summary(source.path).get("resolution")
    if isinstance(stored, int) and stored != resolution:
        raise DataError(
            f"TFRecord dataset {source.path} has resolution {stored} but "
            f"{resolution} was requested; degraded images are never resized")


def _tfrecord_dataset(source, resolution):
    """A tf.data.Dataset of (uint8 [R, R, 3], int64 label) in file order."""
    _check_tfrecord_resolution(source, resolution)
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        image = tf.io.decode_png(example["image"], channels=3)
        image = tf.ensure_shape(image, [resolution, resolution, 3])
        return image, example["label"]

    ds = tf.data.TFRecordDataset(_shards(source.path))
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def read_degraded_records(directory, decode_images=True):
    """Reads a degraded dataset with all its per-image metadata.

    Args:
      directory: the builder's output directory (or "tfrecord:<dir>").
      decode_images: also decode the PNGs into "image".

    Returns:
      A dict of numpy arrays, one row per record, sorted by "index":
      "image" uint8 [N, H, W, 3]; int64 [N] for integer keys ("index",
      "label", "noise_applied", "jpeg_quality", "seed"); float32 [N] for
      scalar float keys ("blur_radius", "motion_length", "motion_exposure",
      "motion_expl", "noise_shot", "noise_read"); "kernel" float32
      [N, K, K]; str [N] for bytes keys ("blur_type", "setting"). Keys
      follow the records, so extra keys come through the same way.

    Raises:
      DataError: missing directory, no shards, or malformed records.
    """
    spec = str(directory)
    if not spec.startswith("tfrecord:"):
        spec = "tfrecord:" + spec
    source = parse_source(spec)
    columns = {}
    count = 0
    for raw in tf.data.TFRecordDataset(_shards(source.path)):
        example = tf.train.Example.FromString(raw.numpy())
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            if key == "image":
                values = values[0] if values else b""
            elif kind == "bytes_list":
                values = [v.decode("utf-8", "replace") for v in values]
            column = columns.setdefault(key, (kind, {}))
            column[1][count] = values
        count += 1
    if count == 0:
        raise DataError(f"TFRecord dataset {source.path} has no records")
    out = {}
    for key, (kind, rows) in columns.items():
        if len(rows) != count:
            raise DataError(f"TFRecord dataset {source.path}: feature "
                            f"{key!r} is missing from some records")
        rows = [rows[i] for i in range(count)]
        if key == "image":
            if decode_images:
                out[key] = np.stack([
                    tf.io.decode_png(r, channels=3).numpy() for r in rows])
            continue
        out[key] = _column(key, kind, rows, source.path)
    if "index" in out:
        order = np.argsort(out["index"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _column(key, kind, rows, path):
    dtype = {"int64_list": np.int64, "float_list": np.float32,
             "bytes_list": object}.get(kind, np.float32)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"TFRecord dataset {path}: feature {key!r} has "
                        f"different lengths across records")
    array = np.array(rows, dtype=dtype)
    if lengths == {1}:
        array = array[:, 0]
    if kind == "bytes_list":
        array = array.astype(str)
    if key == "kernel":
        k = math.isqrt(array.shape[1]) if array.ndim == 2 else 0
        if k * k != (array.shape[1] if array.ndim == 2 else -1):
            raise DataError(f"TFRecord dataset {path}: 'kernel' length is "
                            f"not a square")
        array = array.reshape([-1, k, k])
    return array


# --- builtin:skimage_patches ------------------------------------------------

def _skimage_photo_paths():
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.origin:
        raise DataError("builtin:skimage_patches needs scikit-image "
                        "(pip install scikit-image)")
    directory = os.path.join(os.path.dirname(spec.origin), "data")
    paths = [os.path.join(directory, f) for f in SKIMAGE_PHOTOS
             if os.path.isfile(os.path.join(directory, f))]
    if not paths:
        raise DataError(f"no scikit-image sample photos found in "
                        f"{directory}")
    return tuple(paths)


@functools.lru_cache(maxsize=1)
def _skimage_photos(paths):
    """Decoded photos, zero-padded into one uint8 [P, Hmax, Wmax, 3] stack,
    and their true sizes int64 [P, 2]."""
    photos = [tf.io.decode_image(tf.io.read_file(p), channels=3,
                                 expand_animations=False).numpy()
              for p in paths]
    sizes = np.array([p.shape[:2] for p in photos], np.int64)
    stack = np.zeros((len(photos),) + tuple(sizes.max(0)) + (3,), np.uint8)
    for i, p in enumerate(photos):
        stack[i, :p.shape[0], :p.shape[1]] = p
    return stack, sizes


def _patch_params(sizes, resolution, seed, count):
    """Crop parameters of patches 0..count-1; patch i depends only on
    (seed, i), so any prefix of a larger set is the smaller set."""
    params = np.zeros((count, 5), np.int64)
    for i in range(count):
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([seed, 0x5EED, i])))
        photo = i % len(sizes)
        h, w = sizes[photo]
        short = min(h, w)
        lo = min(resolution, short)
        hi = max(lo, short // 2)
        side = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        side = min(max(side, lo), short)
        top = rng.integers(0, h - side + 1)
        left = rng.integers(0, w - side + 1)
        params[i] = (photo, top, left, side, rng.random() < 0.5)
    return params


def _skimage_dataset(source, resolution, seed, limit):
    """A tf.data.Dataset of (uint8 [R, R, 3], photo index) patches."""
    count = source.count if limit is None else min(source.count, limit)
    stack, sizes = _skimage_photos(_skimage_photo_paths())
    params = _patch_params(sizes, resolution, seed, count)
    photos = tf.constant(stack)

    def cut(p):
        crop = photos[p[0], p[1]:p[1] + p[3], p[2]:p[2] + p[3]]
        crop = tf.cond(p[4] > 0, lambda: crop[:, ::-1], lambda: crop)
        image = _resize_crop(tf.cast(crop, tf.float32), resolution)
        return _to_uint8(image), p[0]

    ds = tf.data.Dataset.from_tensor_slices(params)
    return ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)


# --- Fashion-MNIST (IDX files) ----------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def _fashion_files(split):
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_idx(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_idx(path):
    """Reads an IDX file (raw or gzip-compressed, detected by content).

    Args:
      path: file name.

    Returns:
      numpy array with the file's shape and dtype (uint8 for Fashion-MNIST).

    Raises:
      DataError: unreadable file, bad magic number or wrong length.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 \
            or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
                  for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"IDX file {path} has {len(data)} bytes, expected "
                        f"{expected} for shape {shape}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _fashion_mnist_arrays(source, limit):
    images_name, labels_name = _fashion_files(source.split)
    path = _find_idx(source.path, images_name)
    if path is None:
        raise DataError(f"Fashion-MNIST file {images_name}[.gz] not found "
                        f"in {source.path}")
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{path} does not hold uint8 [N, H, W] images")
    label_path = _find_idx(source.path, labels_name)
    if label_path is None:
        labels = np.full([len(images)], -1, np.int64)
    else:
        labels = read_idx(label_path).astype(np.int64)
        if labels.shape != (len(images),):
            raise DataError(f"{label_path} has {labels.size} labels for "
                            f"{len(images)} images")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _grayscale_to_rgb_square(images, resolution):
    """Fashion-MNIST layout: uint8 [N, 28, 28] -> uint8 [N, R, R, 3].

    Zero-pads 2 px on every side to 32x32 (the background is exactly 0, so
    this adds no edge), resizes 32 -> R with the bilinear/antialias rule
    (a no-op at R = 32) and replicates the channel.
    """
    x = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
    if x.shape[1] != resolution:
        x = tf.image.resize(x.astype(np.float32), [resolution, resolution],
                            method="bilinear", antialias=True)
        x = _to_uint8(x).numpy()
    return np.repeat(x, 3, axis=-1)


# --- Public loaders ---------------------------------------------------------

def iter_source_uint8(spec, resolution, chunk_size=1024, limit=None, seed=0,
                      min_image_size=DEFAULT_MIN_IMAGE_SIZE, report=None):
    """Iterates over a source in fixed-size chunks of uint8 images, in order.

    Args:
      spec: a source spec string or `Source`.
      resolution: output size R (images are resized so the shorter side is
        R and centre-cropped; TFRecord sets must already be R x R).
      chunk_size: images per chunk; every chunk but the last is full.
      limit: deliver at most this many images (None: all).
      seed: seed of builtin:skimage_patches (ignored by other sources).
      min_image_size: image folders only: shorter side below this is
        skipped (px).
      report: optional `ScanReport` filled in place (per-file outcomes
        for folders; found/used counts for other sources).

    Returns:
      A generator of (images uint8 [n, R, R, 3] in [0, 255], labels int64
      [n]; -1 when the source has no labels, the photo index for skimage
      patches).

    Raises:
      DataError: bad spec or missing path (at call time); no usable image
        (while iterating).
    """
    source = parse_source(spec)
    if chunk_size < 1 or resolution < 1:
        raise ValueError("chunk_size and resolution must be positive")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be positive, got {limit}")
    report = report if report is not None else ScanReport()
    return _iter_source(source, resolution, chunk_size, limit, seed,
                        min_image_size, report)


def _iter_source(source, resolution, chunk_size, limit, seed, min_image_size,
                 report):
    """The generator behind `iter_source_uint8`."""
    if source.kind == "folder":
        yield from _iter_folder(source, resolution, chunk_size, limit,
                                min_image_size, report)
        return
    report.root = str(source)
    if source.kind == "fashion_mnist":
        all_images, all_labels = _fashion_mnist_arrays(source, limit)
        # Distinct names: the loop below rebinds `images`, and this lazy
        # generator must keep slicing the whole set.
        chunks = ((all_images[i:i + chunk_size],
                   all_labels[i:i + chunk_size])
                  for i in range(0, len(all_images), chunk_size))
        convert = True
    else:
        if source.kind == "tfds":
            ds = _tfds_dataset(source, resolution)
        elif source.kind == "tfrecord":
            ds = _tfrecord_dataset(source, resolution)
        else:
            ds = _skimage_dataset(source, resolution, seed, limit)
        if limit is not None:
            ds = ds.take(limit)
        ds = ds.batch(chunk_size).prefetch(1)
        chunks = ds.as_numpy_iterator()
        convert = False
    for images, labels in _numpy_chunks(chunks, source):
        if convert:
            images = _grayscale_to_rgb_square(images, resolution)
        report.found += len(images)
        report.used += len(images)
        yield images, labels.astype(np.int64)
    if report.used == 0:
        raise DataError(f"data source {source} has no images")


def _numpy_chunks(chunks, source):
    """Iterates chunks, turning TF read errors into DataError."""
    try:
        yield from chunks
    except tf.errors.OpError as e:
        raise DataError(f"cannot read {source}: {_tf_message(e)}") from None


def load_clean_uint8(spec, resolution, limit=None, seed=0,
                     min_image_size=DEFAULT_MIN_IMAGE_SIZE, report=None):
    """Loads a (small) source into memory.

    Args: as `iter_source_uint8`.

    Returns:
      (images uint8 [N, R, R, 3] in [0, 255], labels int64 [N], -1 when
      the source has no labels).

    Raises:
      DataError: bad spec, missing data, or no usable image.
    """
    chunks = list(iter_source_uint8(
        spec, resolution, chunk_size=4096, limit=limit, seed=seed,
        min_image_size=min_image_size, report=report))
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    return images, labels


# --- Training pipeline ------------------------------------------------------

def _as_seed(seed):
    """int or [2] integer tensor -> [2] int64 stateless-RNG seed."""
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.ensure_shape(seed, [2])


def dequantize(u8, seed):
    """NR-GAN input normalisation with dequantisation noise.

    v = 2 (x 255/256 - 1/2) + U(0, 1/128) with x = u8 / 255, i.e.
    v = (u8 + u) / 128 - 1 with u ~ U(0, 1). u is drawn on a grid of 2^-16
    so every v is exact in float32: v lies in [-1, 1) and
    floor((v + 1) / 2 * 256) == u8 exactly.

    Args:
      u8: uint8 tensor of any shape, e.g. [B, H, W, 3] in [0, 255].
      seed: int, or a [2] integer tensor, for tf.random.stateless_uniform;
        the same seed gives the same noise.

    Returns:
      float32 tensor of the same shape in [-1, 1).
    """
    u8 = tf.convert_to_tensor(u8)
    if u8.dtype != tf.uint8:
        raise TypeError(f"dequantize expects uint8 images, got {u8.dtype}")
    steps = tf.random.stateless_uniform(
        tf.shape(u8), seed=_as_seed(seed), minval=0, maxval=65536,
        dtype=tf.int32)
    level = tf.cast(u8, tf.float32) + tf.cast(steps, tf.float32) / 65536.0
    return level / 128.0 - 1.0


def make_train_dataset(source, resolution, batch_size, seed, shuffle=True,
                       repeat=True, limit=None, with_labels=False,
                       shuffle_buffer=16384,
                       min_image_size=DEFAULT_MIN_IMAGE_SIZE):
    """Training batches in [-1, 1) with NR-GAN dequantisation.

    In-memory arrays, folders, builtin and Fashion-MNIST sources are held
    in memory and shuffled by index over the whole set; tfds and tfrecord
    sources are streamed through a shuffle buffer. The order (seeded
    `shuffle`) and the dequantisation noise (seed (seed, batch number)) are
    deterministic given `seed`.

    Args:
      source: spec string, `Source`, or uint8 numpy array [N, R, R, 3].
      resolution: R.
      batch_size: global batch size; incomplete batches are dropped.
      seed: int seed for shuffling and dequantisation.
      shuffle: shuffle the images (each epoch anew when repeating).
      repeat: repeat forever.
      limit: use at most this many source images.
      with_labels: also yield int64 [batch] labels (-1 if none).
      shuffle_buffer: buffer size for streamed sources.
      min_image_size: as in `iter_source_uint8`.

    Returns:
      tf.data.Dataset of float32 [batch_size, R, R, 3] in [-1, 1) (or
      (images, labels) when with_labels).

    Raises:
      DataError: bad source, or fewer images than one batch without repeat.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    streamed = None
    if isinstance(source, (np.ndarray, tf.Tensor)):
        images = np.asarray(source)
        if images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != (resolution, resolution, 3):
            raise DataError(
                f"in-memory images must be uint8 [N, {resolution}, "
                f"{resolution}, 3], got {images.dtype} {images.shape}")
        if limit is not None:
            images = images[:limit]
        labels = np.full([len(images)], -1, np.int64)
    else:
        parsed = parse_source(source)
        if parsed.kind == "tfds":
            streamed = _tfds_dataset(parsed, resolution)
        elif parsed.kind == "tfrecord":
            streamed = _tfrecord_dataset(parsed, resolution)
        else:
            images, labels = load_clean_uint8(
                parsed, resolution, limit=limit, seed=seed,
                min_image_size=min_image_size)
    if streamed is None:
        if len(images) == 0 or (not repeat and len(images) < batch_size):
            raise DataError(f"{len(images)} images are fewer than one batch "
                            f"of {batch_size}")
        images_t, labels_t = tf.constant(images), tf.constant(labels)
        ds = tf.data.Dataset.range(len(images))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed,
                            reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(lambda i: (tf.gather(images_t, i), tf.gather(labels_t, i)))
    else:
        ds = streamed if limit is None else streamed.take(limit)
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed,
                            reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=True)
    base = tf.constant(seed, tf.int64)

    def finish(step, batch):
        images, labels = batch
        x = dequantize(images, tf.stack([base, step]))
        return (x, labels) if with_labels else x

    ds = ds.enumerate().map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- Random crops of a sharp folder (paired restorers, issue 17) -------------

DEFAULT_CROP_COUNT = 2048


def crop_params(sizes, resolution, seed, count):
    """(file, top, left) of crops 0..count-1 of R x R from images of
    `sizes` [(h, w)]: crop i comes from image i mod n at a position drawn
    from (seed, i) alone, so any prefix of a larger set is the smaller set.
    Images whose shorter side is below R are given as their resized size.

    Returns:
      int64 [count, 3].
    """
    out = np.zeros((count, 3), np.int64)
    for i in range(count):
        rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([seed, 0xC409, i])))
        f = i % len(sizes)
        h, w = sizes[f]
        out[i] = (f, rng.integers(0, h - resolution + 1),
                  rng.integers(0, w - resolution + 1))
    return out


def load_folder_crops(path, resolution, count=DEFAULT_CROP_COUNT, seed=0):
    """R x R crops at the images' own scale from a folder of any sizes.

    Paired restorers (DeblurGAN) learn blur at the scale the camera made
    it, so their sharp images are cropped, not resized: every image file
    directly or recursively under `path` is decoded (grey replicated,
    alpha dropped); one whose shorter side is below R is first resized so
    that it is R (the folder loader's rule, `_resize_crop`). Crops cycle
    through the files in sorted order (`crop_params`).

    Args:
      path: the folder.
      resolution: crop size R.
      count: number of crops (>= 1).
      seed: crop positions.
    Returns:
      uint8 [count, R, R, 3].
    Raises:
      DataError: no decodable image in the folder.
    """
    root = _expand(path)
    if not os.path.isdir(root):
        raise DataError(f"{path} is not a directory")
    images, skipped = [], []
    for name in _list_files(root):
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            with open(os.path.join(root, name), "rb") as f:
                image = _decode_float(tf.constant(f.read()))
        except (OSError, tf.errors.OpError, ValueError):
            skipped.append(name)
            continue
        h, w = image.shape[:2]
        if h * w > MAX_IMAGE_PIXELS:
            skipped.append(name)
            continue
        if min(h, w) < resolution:
            short = min(h, w)
            size = [max(resolution, (2 * h * resolution + short)
                        // (2 * short)),
                    max(resolution, (2 * w * resolution + short)
                        // (2 * short))]
            image = tf.image.resize(image, size, "bilinear", antialias=True)
        images.append(_to_uint8(image).numpy())
    if skipped:
        logger.warning("%s: %d file(s) not decodable or too large, e.g. "
                       "%s", path, len(skipped), skipped[0])
    if not images:
        raise DataError(f"no decodable image in {path}")
    params = crop_params([im.shape[:2] for im in images], resolution, seed,
                         count)
    r = resolution
    return np.stack([images[f][t:t + r, s:s + r] for f, t, s in params])
