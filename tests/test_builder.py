"""Tests for the degraded-dataset builder and its CLI.

The reference for "metadata agrees with the images" is independent of the
implementation: scipy.ndimage.convolve (mode="mirror" = reflect padding,
true convolution) in float64 for the blur, numpy float64 noise with eps
regenerated from the documented stream, numpy rounding, and Pillow for JPEG.

Tolerance: the builder computes in float32, the reference in float64; their
pre-rounding values (255 x) differ by < 1e-4 levels (measured max 7.5e-5).
A pixel whose float64 value lies within TIE_TOL = 2e-4 levels of a rounding
tie may legitimately round either way, so for non-JPEG images a +-1 level
difference is allowed only at such pixels (and at most 1e-3 of all pixels).
For JPEG images every way of rounding the (few) near-tie pixels is tried and
one must reproduce the stored image exactly through Pillow; images with more
than MAX_TIES near-tie pixels (rare) are skipped, at most 5 % of them.
"""

import io
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from bncr_tf.degradations import builder
from bncr_tf.degradations import settings as S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES = 300
TIE_TOL = 2e-4
MAX_TIES = 7


def _smooth_random_images(n, size, seed):
    """Fallback clean images: smooth random colour fields."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, size // 4, size // 4, 3))
    up = ndimage.zoom(noise, (1, 4, 4, 1), order=3)
    up = (up - up.min()) / (up.max() - up.min())
    return np.round(255 * up).astype(np.uint8)


@pytest.fixture(scope="module")
def clean():
    try:
        from bncr_tf import data  # pylint: disable=import-outside-toplevel
        images, _ = data.load_clean_uint8(
            f"builtin:skimage_patches:count={N_IMAGES}", 32)
    except Exception:  # pylint: disable=broad-except
        images = _smooth_random_images(N_IMAGES, 32, 0)
    assert images.shape == (N_IMAGES, 32, 32, 3) and images.dtype == np.uint8
    return images


def _build(clean, out_dir, setting, **kw):
    kw.setdefault("progress", False)
    return builder.build_degraded_dataset(
        clean, np.arange(len(clean)) % 10, setting, str(out_dir), **kw)


def _raw_records(out_dir):
    files = sorted(f for f in os.listdir(out_dir)
                   if f.startswith("data.tfrecord-"))
    return [r.numpy() for r in tf.data.TFRecordDataset(
        [os.path.join(out_dir, f) for f in files])]


def _records(out_dir, kernel_size=7):
    out = [builder.parse_example(r, kernel_size)
           for r in _raw_records(out_dir)]
    return [{k: v.numpy() for k, v in ex.items()} for ex in out]


@pytest.fixture(scope="module")
def built(clean, tmp_path_factory):
    """Setting P and N data sets built once, reused by several tests."""
    root = tmp_path_factory.mktemp("built")
    out = {}
    for name, kw in (("P", dict(workers=1, chunk_size=64, shards=3)),
                     ("N", dict(workers=2, chunk_size=128, shards=1))):
        summary = _build(clean, root / name, name, seed=0, **kw)
        out[name] = (root / name, summary)
    return out


def test_layout_order_and_summary(built):
    out_dir, summary = built["P"]
    files = sorted(os.listdir(out_dir))
    assert files == ["data.tfrecord-00000-of-00003",
                     "data.tfrecord-00001-of-00003",
                     "data.tfrecord-00002-of-00003", "summary.json"]
    with open(out_dir / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["setting"] == "P" and on_disk["seed"] == 0
    assert on_disk["resolution"] == 32 and on_disk["kernel_size"] == 7
    per_file = [sum(1 for _ in tf.data.TFRecordDataset(str(out_dir / f)))
                for f in files[:3]]
    assert per_file == [100, 100, 100]
    assert [s["num_records"] for s in on_disk["shards"]] == per_file
    recs = _records(out_dir)
    np.testing.assert_array_equal([r["index"] for r in recs],
                                  np.arange(N_IMAGES))
    assert [r["label"] for r in recs] == list(np.arange(N_IMAGES) % 10)
    counts = on_disk["counts"]
    assert counts["images"] == N_IMAGES
    assert counts["blur"] == sum(r["blur_type"] != b"none" for r in recs)
    assert counts["noise"] == sum(r["noise_applied"] for r in recs)
    assert counts["jpeg"] == sum(r["jpeg_quality"] > 0 for r in recs)
    hist = on_disk["jpeg_quality_histogram"]
    assert sum(hist.values()) == counts["jpeg"]
    assert on_disk["images_per_s"] > 0 and on_disk["wall_time_s"] > 0
    assert {r["setting"] for r in recs} == {b"P"}


def test_setting_p_subsets_exact_and_independent(built):
    recs = _records(built["P"][0])
    blur = np.array([r["blur_type"] != b"none" for r in recs])
    noise = np.array([r["noise_applied"] == 1 for r in recs])
    jpeg = np.array([r["jpeg_quality"] > 0 for r in recs])
    half = N_IMAGES // 2
    assert blur.sum() == noise.sum() == jpeg.sum() == half
    for a, b in ((blur, noise), (blur, jpeg), (noise, jpeg)):
        assert abs(np.sum(a & b) - N_IMAGES / 4) <= 22  # ~5 sd
    assert 0 < np.sum(blur & noise & jpeg) < half


def _reference_pre_jpeg(clean_u8, rec, setting, seed):
    """float64 255*x before rounding, from clean pixels + metadata."""
    x = clean_u8.astype(np.float64) / 255.0
    if rec["blur_type"] != b"none":
        k = rec["kernel"].astype(np.float64)
        x = np.stack([ndimage.convolve(x[..., c], k, mode="mirror")
                      for c in range(3)], axis=-1)
        x = np.clip(x, 0.0, 1.0)
    if rec["noise_applied"]:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [seed, setting.setting_id, 4, int(rec["index"])])))
        log_shot = rng.uniform(np.log(1e-4), np.log(1.2e-2))
        log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
        assert rec["noise_shot"] == pytest.approx(np.exp(log_shot), rel=1e-6)
        assert rec["noise_read"] == pytest.approx(np.exp(log_read), rel=1e-6)
        eps = rng.standard_normal(x.shape, dtype=np.float32)
        var = float(rec["noise_read"]) + float(rec["noise_shot"]) * x
        x = np.clip(x + eps.astype(np.float64) * np.sqrt(var), 0.0, 1.0)
    return 255.0 * x


def _pillow_jpeg(u8, quality):
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=int(quality),
                             subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _check_metadata_reproduces_images(clean, out_dir, name):
    setting = S.get_setting(name)
    recs = _records(out_dir)
    tie_mismatch, pixels, skipped, n_jpeg = 0, 0, 0, 0
    for rec in recs:
        i = int(rec["index"])
        # Metadata consistency.
        kind = rec["blur_type"].decode()
        ident = np.zeros((7, 7), np.float32)
        ident[3, 3] = 1.0
        if kind == "none":
            np.testing.assert_array_equal(rec["kernel"], ident)
        elif kind == "disk":
            assert 0.5 <= rec["blur_radius"] <= 2.0
            assert rec["motion_length"] == 0
        else:
            assert kind == "motion" and rec["motion_length"] == 5.0
            assert round(float(rec["motion_exposure"]), 3) in (0.1, 0.5, 1.0)
        if not rec["noise_applied"]:
            assert rec["noise_shot"] == 0 and rec["noise_read"] == 0
        assert rec["kernel"].sum() == pytest.approx(1.0, abs=1e-5)
        # Pixels.
        v = _reference_pre_jpeg(clean[i], rec, setting, 0)
        ref = np.rint(v).astype(np.int64)
        near_tie = np.abs(v - np.floor(v) - 0.5) < TIE_TOL
        stored = rec["image"].astype(np.int64)
        q = int(rec["jpeg_quality"])
        if q == 0:
            diff = stored - ref
            assert np.all(np.abs(diff) <= 1), i
            assert np.all(near_tie[diff != 0]), i
            tie_mismatch += int(np.sum(diff != 0))
            pixels += diff.size
            continue
        assert 60 <= q <= 100
        n_jpeg += 1
        ties = np.argwhere(near_tie)
        if len(ties) > MAX_TIES:
            skipped += 1
            continue
        floor_v = np.floor(v).astype(np.int64)
        ok = False
        for choice in itertools.product((0, 1), repeat=len(ties)):
            cand = ref.copy()
            for (r, c, ch), up in zip(ties, choice):
                cand[r, c, ch] = floor_v[r, c, ch] + up
            if np.array_equal(_pillow_jpeg(
                    np.clip(cand, 0, 255).astype(np.uint8), q), stored):
                ok = True
                break
        assert ok, f"image {i}: Pillow JPEG q={q} does not reproduce it"
    assert tie_mismatch <= 1e-3 * max(pixels, 1)
    assert skipped <= 0.05 * max(n_jpeg, 1)
    return len(recs)


@pytest.mark.parametrize("name", ["P", "N"])
def test_metadata_reproduces_images(clean, built, name):
    assert _check_metadata_reproduces_images(
        clean, built[name][0], name) == N_IMAGES


def test_deterministic_across_workers_chunks_and_runs(clean, built,
                                                      tmp_path):
    ref = b"".join(_raw_records(built["P"][0]))
    for k, kw in enumerate((dict(workers=2, chunk_size=64, shards=1),
                            dict(workers=2, chunk_size=37, shards=2),
                            dict(workers=1, chunk_size=300, shards=1))):
        out = tmp_path / f"p{k}"
        _build(clean, out, "P", seed=0, **kw)
        assert b"".join(_raw_records(out)) == ref, kw
    _build(clean, tmp_path / "seed1", "P", seed=1, workers=2, chunk_size=64)
    assert b"".join(_raw_records(tmp_path / "seed1")) != ref
    # Same for N with other chunkings (every image goes through every stage).
    ref_n = b"".join(_raw_records(built["N"][0]))
    _build(clean, tmp_path / "n1", "N", seed=0, workers=1, chunk_size=50)
    assert b"".join(_raw_records(tmp_path / "n1")) == ref_n


def test_setting_a_unchanged_and_j_quality(clean, tmp_path):
    _build(clean, tmp_path / "A", "A", seed=0, workers=2, chunk_size=100)
    recs = _records(tmp_path / "A")
    np.testing.assert_array_equal(np.stack([r["image"] for r in recs]), clean)
    assert all(r["blur_type"] == b"none" and r["jpeg_quality"] == 0
               and r["noise_applied"] == 0 for r in recs)
    summary = _build(clean, tmp_path / "J", "J", seed=0, workers=2)
    q = np.array([r["jpeg_quality"] for r in _records(tmp_path / "J")])
    assert q.dtype == np.int64 and np.all((q >= 60) & (q <= 100))
    assert q.min() <= 62 and q.max() >= 98
    counts = np.bincount(q - 60, minlength=41)
    # Roughly uniform: 300 / 41 ~ 7.3 per value.
    assert counts.max() <= 20 and np.sum(counts == 0) <= 4
    assert np.mean(q) == pytest.approx(80, abs=2.5)
    hist = {int(k): v for k, v in summary["jpeg_quality_histogram"].items()}
    assert hist == {int(v) + 60: int(c) for v, c in enumerate(counts) if c}


def test_out_dir_protection_and_atomic_replace(clean, tmp_path):
    out = tmp_path / "ds"
    _build(clean[:20], out, "H", seed=0)
    with pytest.raises(FileExistsError):
        _build(clean[:20], out, "H", seed=0)
    _build(clean[:10], out, "B", seed=0, overwrite=True)
    with open(out / "summary.json") as f:
        assert json.load(f)["setting"] == "B"
    assert len(_raw_records(out)) == 10
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temp dirs left
    (tmp_path / "empty").mkdir()
    _build(clean[:5], tmp_path / "empty", "A", seed=0)
    assert len(_raw_records(tmp_path / "empty")) == 5
    with pytest.raises(ValueError):
        _build(clean[:5], tmp_path / "bad", "A", seed=0, shards=6)
    assert not (tmp_path / "bad").exists()


def test_cli(clean, tmp_path):
    src = tmp_path / "clean.npy"
    np.save(src, clean[:40])
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "tools",
                                        "make_degraded_dataset.py"),
           f"--source=npy:{src}", "--setting=P", "--resolution=32",
           f"--out_dir={out}", "--seed=0", "--workers=2", "--shards=2",
           "--chunk_size=16", "--log_every=0.001"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "img/s" in res.stderr and "ETA" in res.stderr
    assert len(_raw_records(out)) == 40
    # Same records as the library call (npy sources have label -1).
    builder.build_degraded_dataset(clean[:40], None, "P",
                                   str(tmp_path / "lib"), seed=0,
                                   chunk_size=40, progress=False)
    assert _raw_records(out) == _raw_records(tmp_path / "lib")
    # Refuses a non-empty out_dir with a one-line error.
    res = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert res.returncode != 0
    assert "not empty" in res.stderr and "--overwrite" in res.stderr
    res = subprocess.run(cmd[:3] + ["--setting=Z"] + cmd[4:], env=env,
                         capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode != 0 and "--setting must be one of" in res.stderr


def test_ffhq_variant_128px_kernel_11_and_chunk_independent(tmp_path):
    clean = _smooth_random_images(16, 128, 3)
    a = _build(clean, tmp_path / "a", "ffhq_P", seed=2, chunk_size=16)
    _build(clean, tmp_path / "b", "ffhq_P", seed=2, chunk_size=5, workers=2)
    assert a["kernel_size"] == 11 and a["resolution"] == 128
    assert _raw_records(tmp_path / "a") == _raw_records(tmp_path / "b")
    recs = _records(tmp_path / "a", kernel_size=11)
    assert all(r["kernel"].shape == (11, 11) for r in recs)
    assert all(r["image"].shape == (128, 128, 3) for r in recs)
    assert sum(r["blur_type"] != b"none" for r in recs) == 8
    for r in recs:
        if r["blur_type"] == b"motion":
            assert r["motion_length"] == 10.0
        if r["blur_type"] == b"disk":
            assert 0.5 <= r["blur_radius"] <= 4.0
