"""Tests for bncr_tf.data: sources, bad-file handling, dequantisation."""

import gzip
import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, features

from bncr_tf import data

R = 16


# --- Helpers ----------------------------------------------------------------

def _smooth(shape, seed):
    """A smooth uint8 test image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(np.cumsum(rng.normal(size=shape), 0), 1)
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    return (x * 255).astype(np.uint8)


def _save(path, image, fmt=None, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, fmt, **kwargs)


def _png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _pillow_reference(image, resolution):
    """The documented rule with Pillow: short side -> R, centre crop."""
    w, h = image.size
    short = min(h, w)
    nh = (2 * h * resolution + short) // (2 * short)
    nw = (2 * w * resolution + short) // (2 * short)
    out = np.asarray(image.resize((nw, nh), Image.BILINEAR), np.float64)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    return out[top:top + resolution, left:left + resolution]


# --- Image folder with good and bad files -----------------------------------

GOOD_RGB = _smooth((30, 20, 3), 1)           # downscaled: 30x20 -> 24x16
GRAY = _smooth((10, 12), 2)                  # upscaled: 10x12 -> 16x19
RGBA_COLOUR = (10, 200, 30)
IMG16 = (np.arange(R * R, dtype=np.uint32).reshape(R, R) * 257 + 77)
IMG16 = np.minimum(IMG16, 65535).astype(np.uint16)

# name -> documented outcome ("used" or a ScanReport reason key).
EXPECTED = {
    "good.jpg": "used",
    "sub/good.png": "used",
    "sub/gray.png": "used",
    "sub/RGBA.PNG": "used",
    "sub/deep/img16.png": "used",
    "sub/deep/anim.GIF": "used",
    "tiny.png": "too_small",
    "corrupt.jpg": "corrupt",
    "sub/truncated.png": "corrupt",
    "zero.jpg": "empty",
    "sub/text.png": "not_image",
    "notes.txt": "extension",
}
if features.check("webp"):
    EXPECTED["sub/photo.webp"] = "used"


def _corrupt_jpeg():
    """JPEG headers up to the start of scan, then garbage, no end marker."""
    buf = io.BytesIO()
    Image.fromarray(_smooth((32, 32, 3), 3)).save(buf, "JPEG", quality=90)
    raw = buf.getvalue()
    sos = raw.index(b"\xff\xda")
    garbage = np.random.default_rng(0).integers(0, 255, 400, np.uint8)
    return raw[:sos + 14] + garbage.tobytes()


def _build_folder(root):
    j = os.path.join
    _save(j(root, "good.jpg"), Image.fromarray(_smooth((40, 50, 3), 0)),
          "JPEG", quality=95)
    _save(j(root, "sub/good.png"), Image.fromarray(GOOD_RGB))
    _save(j(root, "sub/gray.png"), Image.fromarray(GRAY, "L"))
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., :3] = RGBA_COLOUR
    rgba[..., 3] = np.arange(400).reshape(20, 20) % 256
    _save(j(root, "sub/RGBA.PNG"), Image.fromarray(rgba, "RGBA"), "PNG")
    _save(j(root, "sub/deep/img16.png"), Image.fromarray(IMG16))
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0),
                                                      (0, 0, 255))]
    os.makedirs(j(root, "sub/deep"), exist_ok=True)
    frames[0].save(j(root, "sub/deep/anim.GIF"), "GIF", save_all=True,
                   append_images=frames[1:], duration=100)
    if "sub/photo.webp" in EXPECTED:
        _save(j(root, "sub/photo.webp"),
              Image.fromarray(_smooth((24, 24, 3), 4)), "WEBP", lossless=True)
    _save(j(root, "tiny.png"), Image.fromarray(_smooth((4, 4, 3), 5)))
    with open(j(root, "corrupt.jpg"), "wb") as f:
        f.write(_corrupt_jpeg())
    png = _png_bytes(_smooth((32, 32, 3), 6))
    with open(j(root, "sub/truncated.png"), "wb") as f:
        f.write(png[:len(png) // 2])
    open(j(root, "zero.jpg"), "wb").close()
    with open(j(root, "sub/text.png"), "w") as f:
        f.write("this is not a picture\n")
    with open(j(root, "notes.txt"), "w") as f:
        f.write("notes\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    _build_folder(root)
    return root


@pytest.fixture(scope="module")
def loaded(folder):
    report = data.ScanReport()
    images, labels = data.load_clean_uint8(folder, R, report=report)
    used = sorted(n for n, o in EXPECTED.items() if o == "used")
    return dict(zip(used, images)), images, labels, report


def test_png_16bit_fixture_is_16bit(folder):
    with open(os.path.join(folder, "sub/deep/img16.png"), "rb") as f:
        assert f.read(25)[24] == 16


def test_folder_outcomes_and_report(loaded):
    by_name, images, labels, report = loaded
    used = [n for n, o in EXPECTED.items() if o == "used"]
    assert images.shape == (len(used), R, R, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.all(labels == -1)
    assert report.found == len(EXPECTED)
    assert report.used == len(used)
    assert report.not_examined == 0
    expected_skips = {}
    for name, outcome in EXPECTED.items():
        if outcome != "used":
            expected_skips[outcome] = expected_skips.get(outcome, 0) + 1
            listed = [e.split(" (")[0] for e in report.examples[outcome]]
            assert name in listed, (name, report.examples)
    assert report.skipped == expected_skips
    assert report.num_skipped == len(EXPECTED) - len(used)
    assert "tiny.png (4x4)" in report.examples["too_small"]
    corrupt = " ".join(report.examples["corrupt"])
    assert "corrupt.jpg (" in corrupt and "[Op:" not in corrupt


def test_folder_logs_summary_and_reasons(folder, caplog):
    with caplog.at_level(logging.INFO, logger="bncr_tf.data"):
        data.load_clean_uint8(folder, R, limit=1)
    text = caplog.text
    assert f"image folder {os.path.abspath(folder)}: {len(EXPECTED)} files" \
        in text
    assert "not examined (limit reached)" in text
    assert "notes.txt" in text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 2


def test_rgb_png_matches_pillow_reference(loaded):
    out = loaded[0]["sub/good.png"].astype(np.float64)
    ref = _pillow_reference(Image.fromarray(GOOD_RGB), R)
    assert np.abs(out - ref).max() <= 1.0
    assert np.abs(out - ref).mean() < 0.5


def test_grayscale_is_replicated_and_upscaled_like_pillow(loaded):
    out = loaded[0]["sub/gray.png"]
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 0], out[..., 2])
    ref = _pillow_reference(Image.fromarray(GRAY, "L"), R)
    assert np.abs(out[..., 0].astype(np.float64) - ref).max() <= 1.0


def test_rgba_alpha_is_dropped(loaded):
    out = loaded[0]["sub/RGBA.PNG"]
    assert np.all(out == np.array(RGBA_COLOUR, np.uint8))


def test_16bit_png_scaled_to_8bit(loaded):
    out = loaded[0]["sub/deep/img16.png"].astype(np.float64)
    exact = IMG16.astype(np.float64) * 255.0 / 65535.0
    assert np.abs(out[..., 0] - exact).max() <= 0.5 + 1e-9
    assert np.array_equal(out[..., 0], out[..., 2])


def test_gif_first_frame(loaded):
    out = loaded[0]["sub/deep/anim.GIF"]
    assert np.all(out == np.array([255, 0, 0], np.uint8))


def test_chunks_are_index_ordered_and_fixed_size(folder, loaded):
    chunks = list(data.iter_source_uint8(folder, R, chunk_size=4))
    sizes = [len(c[0]) for c in chunks]
    n = len(loaded[1])
    assert sizes == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), loaded[1])


def test_tiny_image_used_when_min_image_size_lowered(tmp_path):
    _save(str(tmp_path / "tiny.png"), Image.fromarray(_smooth((4, 4, 3), 5)))
    with pytest.raises(data.DataError, match="smaller than 8 px"):
        data.load_clean_uint8(str(tmp_path), R)
    images, _, report = data.load_image_folder(str(tmp_path), R,
                                               min_image_size=4)
    assert images.shape == (1, R, R, 3) and report.used == 1


def test_empty_folder_raises(tmp_path):
    (tmp_path / "only_subdir").mkdir()
    with pytest.raises(data.DataError, match="contains no files"):
        data.load_clean_uint8(str(tmp_path), R)


def test_all_bad_folder_raises_one_sentence(tmp_path):
    open(tmp_path / "zero.jpg", "wb").close()
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "bad.jpg").write_bytes(_corrupt_jpeg())
    with pytest.raises(data.DataError) as info:
        data.load_clean_uint8(f"folder:{tmp_path}", R)
    message = str(info.value)
    assert message.startswith(f"no usable images in {tmp_path}: 3 files, "
                              f"all unusable (")
    assert "1 corrupt" in message and "1 empty" in message
    assert "1 not an image" in message and "\n" not in message


def test_missing_and_unknown_sources_raise(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(data.DataError, match="does not exist"):
        data.parse_source(f"folder:{missing}")
    with pytest.raises(data.DataError, match="not an existing directory"):
        data.load_clean_uint8(missing, R)
    with pytest.raises(data.DataError, match="unknown data source scheme"):
        data.parse_source("hf:some/dataset")
    with pytest.raises(data.DataError, match="does not exist"):
        data.parse_source(f"tfrecord:{missing}")
    with pytest.raises(data.DataError, match="unknown builtin"):
        data.parse_source("builtin:lena")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(data.DataError, match="is a file"):
        data.parse_source(str(tmp_path / "f.png"))


def test_parse_source_forms(tmp_path):
    assert data.parse_source("tfds:cifar10").split == "train"
    src = data.parse_source("tfds:cifar10:test[:100]")
    assert (src.kind, src.name, src.split) == ("tfds", "cifar10", "test[:100]")
    assert data.parse_source(str(tmp_path)).kind == "folder"
    assert data.parse_source("builtin:skimage_patches:count=7").count == 7
    with pytest.raises(data.DataError, match="count=N"):
        data.parse_source("builtin:skimage_patches:count=0")


# --- TFDS -------------------------------------------------------------------

def test_tfds_cifar10_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        images, labels = data.load_clean_uint8("tfds:cifar10:train", 32)
        raw = np.stack([e["image"] for e in tfds.as_numpy(tfds.load(
            "cifar10", split="train", download=False))])
        small, _ = data.load_clean_uint8("tfds:cifar10", R, limit=4)
        ds = data.make_train_dataset("tfds:cifar10:train", 32, 4, seed=0)
        batch = next(iter(ds))
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, raw)
    assert labels.dtype == np.int64 and np.all((labels >= 0) & (labels < 10))
    assert small.shape == (4, R, R, 3)
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == tf.float32


# --- TFRecord datasets ------------------------------------------------------

def _write_degraded(directory, n=5, resolution=R, k=3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, resolution, resolution, 3), np.uint8)
    kernels = rng.random((n, k, k)).astype(np.float32)
    kernels /= kernels.sum((1, 2), keepdims=True)
    blur_types = ["none", "disk", "motion", "disk", "none"][:n]

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    def strs(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    shards = [[0, 1, 2], [3, 4]]
    for s, indices in enumerate(shards):
        name = f"data.tfrecord-{s:05d}-of-{len(shards):05d}"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as w:
            for i in indices:
                feature = {
                    "image": strs([_png_bytes(images[i])]),
                    "index": ints([i]), "label": ints([i % 3]),
                    "blur_type": strs([blur_types[i].encode()]),
                    "blur_radius": floats([0.5 * i]),
                    "motion_length": floats([0.0]),
                    "motion_exposure": floats([0.0]),
                    "motion_expl": floats([0.0]),
                    "kernel": floats(kernels[i].ravel()),
                    "noise_applied": ints([i % 2]),
                    "noise_shot": floats([0.01 * i]),
                    "noise_read": floats([0.001]),
                    "jpeg_quality": ints([60 + i]),
                    "setting": strs([b"Q"]), "seed": ints([7]),
                }
                example = tf.train.Example(
                    features=tf.train.Features(feature=feature))
                w.write(example.SerializeToString())
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump({"setting": "Q", "seed": 7, "resolution": resolution,
                   "kernel_size": k, "count": n}, f)
    return images, kernels, blur_types


def test_tfrecord_roundtrip(tmp_path):
    images, kernels, blur_types = _write_degraded(str(tmp_path))
    assert data.parse_source(str(tmp_path)).kind == "tfrecord"
    got, labels = data.load_clean_uint8(f"tfrecord:{tmp_path}", R)
    assert np.array_equal(got, images)
    assert list(labels) == [0, 1, 2, 0, 1]
    records = data.read_degraded_records(str(tmp_path))
    assert np.array_equal(records["image"], images)
    assert list(records["index"]) == [0, 1, 2, 3, 4]
    assert records["kernel"].shape == (5, 3, 3)
    np.testing.assert_allclose(records["kernel"], kernels, rtol=1e-6)
    assert list(records["blur_type"]) == blur_types
    assert list(records["jpeg_quality"]) == [60, 61, 62, 63, 64]
    assert records["jpeg_quality"].dtype == np.int64
    np.testing.assert_allclose(records["blur_radius"],
                               [0, 0.5, 1, 1.5, 2], rtol=1e-6)
    assert set(records["setting"]) == {"Q"}
    assert data.read_degraded_summary(str(tmp_path))["kernel_size"] == 3
    with pytest.raises(data.DataError, match="resolution 16 but 32"):
        data.load_clean_uint8(str(tmp_path), 32)
    ds = data.make_train_dataset(str(tmp_path), R, 2, seed=1,
                                 with_labels=True)
    x, y = next(iter(ds))
    assert x.shape == (2, R, R, 3) and y.shape == (2,)


def test_tfrecord_without_shards_raises(tmp_path):
    with pytest.raises(data.DataError, match="no data.tfrecord"):
        data.parse_source(f"tfrecord:{tmp_path}")


# --- builtin:skimage_patches ------------------------------------------------

def test_skimage_patches_deterministic():
    pytest.importorskip("skimage")
    a, la = data.load_clean_uint8("builtin:skimage_patches:count=12", R,
                                  seed=3)
    b, _ = data.load_clean_uint8("builtin:skimage_patches:count=12", R,
                                 seed=3)
    c, _ = data.load_clean_uint8("builtin:skimage_patches:count=12", R,
                                 seed=4)
    prefix, _ = data.load_clean_uint8("builtin:skimage_patches", R, seed=3,
                                      limit=5)
    assert a.shape == (12, R, R, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(prefix, a[:5])
    assert list(la[:6]) == list(range(6))
    stds = a.reshape(12, -1).std(axis=1)
    assert np.all(stds > 0) and a.std() > 20


# --- Dequantisation and training batches ------------------------------------

def test_dequantize_range_inverse_determinism():
    u8 = np.tile(np.arange(256, dtype=np.uint8), 64).reshape(64, 16, 16)
    v = data.dequantize(u8, seed=5).numpy()
    assert v.dtype == np.float32
    assert v.min() >= -1.0 and v.max() < 1.0
    back = np.floor((v.astype(np.float64) + 1) / 2 * 256)
    assert np.array_equal(back, u8)
    noise = v - (u8 / 128.0 - 1)
    assert noise.min() >= 0 and noise.max() < 1 / 128
    assert abs(noise.mean() - 1 / 256) < 1e-4
    assert np.array_equal(v, data.dequantize(u8, seed=5).numpy())
    assert not np.array_equal(v, data.dequantize(u8, seed=6).numpy())
    pair = tf.constant([5, 0], tf.int64)
    assert np.array_equal(v, data.dequantize(u8, pair).numpy())
    top = data.dequantize(np.full([4096], 255, np.uint8), 1).numpy()
    assert top.max() < 1.0
    with pytest.raises(TypeError):
        data.dequantize(np.zeros([2], np.float32), 0)


def test_make_train_dataset_from_array():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, R, R, 3), np.uint8)
    ds = data.make_train_dataset(images, R, 4, seed=2, repeat=False)
    batches = [b.numpy() for b in ds]
    assert len(batches) == 2
    assert all(b.shape == (4, R, R, 3) and b.dtype == np.float32
               for b in batches)
    again = [b.numpy() for b in data.make_train_dataset(
        images, R, 4, seed=2, repeat=False)]
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    full = next(iter(data.make_train_dataset(images, R, 10, seed=2,
                                             repeat=False)))
    back = np.floor((full.numpy().astype(np.float64) + 1) * 128)
    got = sorted(back.reshape(10, -1).tolist())
    assert got == sorted(images.reshape(10, -1).astype(float).tolist())
    infinite = data.make_train_dataset(images, R, 4, seed=2)
    assert len(list(infinite.take(6))) == 6
    with pytest.raises(data.DataError, match="fewer than one batch"):
        data.make_train_dataset(images, R, 11, seed=0, repeat=False)
    with pytest.raises(data.DataError, match="uint8"):
        data.make_train_dataset(images.astype(np.float32), R, 4, seed=0)


def test_make_train_dataset_from_spec(folder):
    ds = data.make_train_dataset(folder, R, 3, seed=0, with_labels=True)
    x, y = next(iter(ds))
    assert x.shape == (3, R, R, 3) and x.dtype == tf.float32
    assert y.dtype == tf.int64
    assert float(tf.reduce_min(x)) >= -1 and float(tf.reduce_max(x)) < 1


# --- Fashion-MNIST IDX files ------------------------------------------------

def _idx_bytes(array):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.fixture()
def fashion_dir(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (5, 28, 28), np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(train)))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.arange(5, dtype=np.uint8))))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(test))
    return tmp_path, train, test


def test_read_idx_raw_and_gz(fashion_dir):
    path, train, test = fashion_dir
    assert np.array_equal(
        data.read_idx(str(path / "train-images-idx3-ubyte.gz")), train)
    assert np.array_equal(
        data.read_idx(str(path / "t10k-images-idx3-ubyte")), test)
    ints = np.arange(6, dtype=">i4").reshape(2, 3)
    (path / "ints.idx").write_bytes(_idx_bytes(ints))
    got = data.read_idx(str(path / "ints.idx"))
    assert got.tolist() == ints.tolist()
    (path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(str(path / "bad.idx"))
    (path / "short.idx").write_bytes(_idx_bytes(train)[:-5])
    with pytest.raises(data.DataError, match="expected"):
        data.read_idx(str(path / "short.idx"))


def test_fashion_mnist_source(fashion_dir, monkeypatch):
    path, train, test = fashion_dir
    images, labels = data.load_clean_uint8(f"fashion_mnist:train:{path}", 32)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert list(labels) == [0, 1, 2, 3, 4]
    assert np.array_equal(images[:, 2:30, 2:30, 0], train)
    assert np.all(images[:, :2] == 0) and np.all(images[:, :, 30:] == 0)
    assert np.array_equal(images[..., 0], images[..., 2])
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(path))
    big, labels = data.load_clean_uint8("fashion_mnist:test", 64)
    assert big.shape == (3, 64, 64, 3) and np.all(labels == -1)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(path / "missing"))
    with pytest.raises(data.DataError, match="dataset-fashion-mnist"):
        data.parse_source("fashion_mnist:train")
    with pytest.raises(data.DataError, match="split"):
        data.parse_source("fashion_mnist:validation")


def test_fashion_mnist_in_several_chunks(fashion_dir):
    # Regression: the chunk generator once sliced the converted previous
    # chunk instead of the whole set, so every set larger than one chunk
    # (the real 60k training set) failed on its second chunk.
    path, train, _ = fashion_dir
    chunks = list(data.iter_source_uint8(f"fashion_mnist:train:{path}", 32,
                                         chunk_size=2))
    assert [len(c[0]) for c in chunks] == [2, 2, 1]
    images = np.concatenate([c[0] for c in chunks])
    assert np.array_equal(images[:, 2:30, 2:30, 0], train)
    assert list(np.concatenate([c[1] for c in chunks])) == [0, 1, 2, 3, 4]


@pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DEBIAN_DIR),
    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package(monkeypatch):
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    images, labels = data.load_clean_uint8("fashion_mnist:test", 32,
                                           limit=8)
    assert images.shape == (8, 32, 32, 3)
    assert np.all((labels >= 0) & (labels < 10))
