"""Tests for bncr_tf.degradations.jpeg (spec section 4).

References are independent of the module under test:

* real JPEG: Pillow (libjpeg-turbo) encode with 4:2:0 and Pillow decode;
* quantisation tables: the tables Pillow writes into the file;
* psi^g: a float64 numpy/scipy re-implementation written here (scipy DCT,
  slicing-based pooling, a hand-written bilinear upsampler, Pillow's
  tables).

Run `python -m pytest tests/test_jpeg.py -q -s` to see the PSNR table.
"""

import importlib.util
import io
import os

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf
from PIL import Image

from bncr_tf.degradations import jpeg

SIZES = (32, 128)
QUALITIES = (60, 80, 95, 100)
PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left")


# --------------------------------------------------------------------------
# Test images (spec section 4.5 recipe).
# --------------------------------------------------------------------------


def _skimage_data_dir():
    spec = importlib.util.find_spec("skimage")
    return os.path.join(spec.submodule_search_locations[0], "data")


def _square(img):
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def _centre_crop(img, c):
    w, h = img.size
    left, top = (w - c) // 2, (h - c) // 2
    return img.crop((left, top, left + c, top + c))


def _ramp(size):
    t = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    rgb = np.stack([xx, yy, 0.5 * (xx + 1.0 - yy)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


def _views(size):
    """Nine uint8 [size, size, 3] views: 4 photos x 2 crops + a ramp.

    (a) the centre square of the photo BOX-downsampled whole; (b) a centre
    crop of 3 * size (or the largest multiple of size that fits, e.g. 256
    for the 300 px high chelsea at 128 px) BOX-downsampled.
    """
    out = []
    data_dir = _skimage_data_dir()
    for name in PHOTOS:
        with Image.open(os.path.join(data_dir, name + ".png")) as f:
            sq = _square(f.convert("RGB"))
        out.append(np.asarray(sq.resize((size, size), Image.BOX)))
        c = 3 * size
        while c >= sq.size[0]:
            c -= size
        crop = _centre_crop(sq, c)
        out.append(np.asarray(crop.resize((size, size), Image.BOX)))
    out.append(_ramp(size))
    return np.stack(out)


@pytest.fixture(scope="module")
def views():
    return {s: _views(s) for s in SIZES}


# --------------------------------------------------------------------------
# Pillow helpers.
# --------------------------------------------------------------------------


def _pillow_bytes(u8, q):
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=int(q), subsampling="4:2:0")
    return buf.getvalue()


def _pillow_jpeg(u8, q):
    with Image.open(io.BytesIO(_pillow_bytes(u8, q))) as f:
        return np.asarray(f.convert("RGB"))


_TABLE_CACHE = {}


def _pillow_tables(q):
    """(luma, chroma) float64 [8, 8] tables written by Pillow at q."""
    if q not in _TABLE_CACHE:
        u8 = np.zeros((16, 16, 3), np.uint8)
        with Image.open(io.BytesIO(_pillow_bytes(u8, q))) as f:
            qt = f.quantization
        _TABLE_CACHE[q] = tuple(
            np.asarray(qt[i], np.float64).reshape(8, 8) for i in (0, 1))
    return _TABLE_CACHE[q]


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64))
                  ** 2)
    return np.inf if mse == 0 else 10.0 * np.log10(1.0 / mse)


# --------------------------------------------------------------------------
# Independent float64 reference of psi^g.
# --------------------------------------------------------------------------


def _ref_round(u, rounding):
    if rounding == "ste":
        return np.round(u)
    if rounding == "cubic":
        r = np.round(u)
        return r + (u - r) ** 3
    if rounding == "sin":
        return u - np.sin(2.0 * np.pi * u) / (2.0 * np.pi)
    assert rounding == "none"
    return u


def _ref_quantise(plane, table, rounding):
    """plane [h, w] level-shifted; blockwise DCT/quantise/IDCT."""
    h, w = plane.shape
    out = np.empty_like(plane)
    for i in range(0, h, 8):
        for j in range(0, w, 8):
            c = scipy.fft.dctn(plane[i:i + 8, j:j + 8], type=2,
                               norm="ortho")
            c = _ref_round(c / table, rounding) * table
            out[i:i + 8, j:j + 8] = scipy.fft.idctn(c, type=2, norm="ortho")
    return out


def _ref_upsample_1d(a, axis):
    """x2 bilinear, half-pixel centres, edge clamp, along `axis`."""
    n = a.shape[axis]
    src = (np.arange(2 * n) + 0.5) / 2.0 - 0.5
    i0 = np.floor(src).astype(int)
    frac = src - i0
    lo = np.clip(i0, 0, n - 1)
    hi = np.clip(i0 + 1, 0, n - 1)
    shape = [1] * a.ndim
    shape[axis] = 2 * n
    frac = frac.reshape(shape)
    return (np.take(a, lo, axis=axis) * (1.0 - frac)
            + np.take(a, hi, axis=axis) * frac)


def _ref_psi(u8_or_float, q, rounding="ste"):
    """float64 psi^g of one [H, W, 3] image (H, W multiples of 16)."""
    x = np.asarray(u8_or_float, np.float64)
    if np.asarray(u8_or_float).dtype == np.uint8:
        x = x / 255.0
    r, g, b = (x[..., i] * 255.0 for i in range(3))
    yy = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0

    def pool(c):
        return (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2]
                + c[1::2, 1::2]) / 4.0

    tl, tc = _pillow_tables(q)
    yy = _ref_quantise(yy - 128.0, tl, rounding) + 128.0
    chans = []
    for c in (cb, cr):
        c = _ref_quantise(pool(c) - 128.0, tc, rounding) + 128.0
        chans.append(_ref_upsample_1d(_ref_upsample_1d(c, 0), 1))
    cb, cr = chans
    r = yy + 1.402 * (cr - 128.0)
    g = yy - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0)
    b = yy + 1.772 * (cb - 128.0)
    return np.clip(np.stack([r, g, b], axis=-1) / 255.0, 0.0, 1.0)


def _tf_psi(u8, q, rounding="ste"):
    x = tf.constant(u8, tf.float32) / 255.0
    qv = tf.fill([u8.shape[0]], float(q))
    return jpeg.diff_jpeg(x, qv, rounding=rounding).numpy()


# --------------------------------------------------------------------------
# Real JPEG.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_jpeg_compress_matches_pillow(views, size):
    u8 = views[size]
    x = tf.constant(u8, tf.float32) / 255.0
    for q in QUALITIES:
        got = jpeg.jpeg_compress(x, tf.fill([u8.shape[0]], float(q)))
        assert got.dtype == tf.float32
        got_u8 = np.round(got.numpy() * 255.0).astype(np.uint8)
        for i in range(u8.shape[0]):
            np.testing.assert_array_equal(
                got_u8[i], _pillow_jpeg(u8[i], q),
                err_msg=f"size {size} q {q} image {i}")


def test_jpeg_compress_per_image_quality_in_tf_function(views):
    u8 = views[32]
    n = u8.shape[0]
    # Non-integer qualities round to the nearest integer; clip to [1, 100].
    q = np.array([59.6, 80.0, 95.4, 100.0, 130.0, 70.2, 64.5, 88.0, 91.0],
                 np.float32)[:n]
    q_int = np.clip(np.round(q), 1, 100).astype(int)

    fn = tf.function(jpeg.jpeg_compress, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None], tf.float32)])
    got = fn(tf.constant(u8, tf.float32) / 255.0, tf.constant(q)).numpy()
    assert got.shape == u8.shape
    got_u8 = np.round(got * 255.0).astype(np.uint8)
    for i in range(n):
        np.testing.assert_array_equal(got_u8[i], _pillow_jpeg(u8[i], q_int[i]))


def test_jpeg_compress_uint8_and_rounding_to_uint8(views):
    u8 = views[128][0]
    for q in (60, 100):
        got = jpeg.jpeg_compress_uint8(u8, q)
        assert got.dtype == tf.uint8 and got.shape == u8.shape
        np.testing.assert_array_equal(got.numpy(), _pillow_jpeg(u8, q))
    # Float input is rounded half to even before encoding.
    x = (u8[None, :32, :32].astype(np.float32) + 0.3) / 255.0
    got = jpeg.jpeg_compress(x, tf.constant([80.0])).numpy()[0]
    ref = _pillow_jpeg(np.ascontiguousarray(u8[:32, :32]), 80)
    np.testing.assert_array_equal(np.round(got * 255.0).astype(np.uint8), ref)


def test_jpeg_compress_odd_size():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    got = jpeg.jpeg_compress(u8.astype(np.float32) / 255.0,
                             tf.constant([75.0, 90.0])).numpy()
    assert got.shape == u8.shape
    for i, q in enumerate((75, 90)):
        np.testing.assert_array_equal(
            np.round(got[i] * 255.0).astype(np.uint8), _pillow_jpeg(u8[i], q))


def test_variable_quality_op_writes_same_bytes_as_encode_jpeg(views):
    u8 = views[32][0]
    for q in (1, 37, 60, 100):
        a = tf.io.encode_jpeg(u8, quality=q).numpy()
        b = tf.raw_ops.EncodeJpegVariableQuality(images=u8, quality=q).numpy()
        assert a == b, q


# --------------------------------------------------------------------------
# Quality tables.
# --------------------------------------------------------------------------


def test_quality_tables_match_pillow():
    qs = [1, 5, 10, 25, 30, 33, 49, 50, 51, 60, 75, 80, 95, 99, 100]
    luma, chroma = jpeg.quality_tables(tf.constant(qs, tf.float32))
    assert luma.shape == (len(qs), 8, 8) and luma.dtype == tf.float32
    for i, q in enumerate(qs):
        tl, tc = _pillow_tables(q)
        np.testing.assert_array_equal(luma.numpy()[i], tl, err_msg=f"q {q}")
        np.testing.assert_array_equal(chroma.numpy()[i], tc, err_msg=f"q {q}")


def test_quality_scale_forward_and_gradient():
    q = tf.constant([0.0, 1.0, 30.0, 49.0, 50.0, 70.0, 100.0, 150.0])
    with tf.GradientTape() as tape:
        tape.watch(q)
        s = jpeg.quality_scale(q)
    ds = tape.gradient(s, q).numpy()
    # C integer division below 50: 5000 // 30 = 166, 5000 // 49 = 102.
    np.testing.assert_array_equal(
        s.numpy(), [5000, 5000, 166, 102, 100, 60, 0, 0])
    np.testing.assert_allclose(
        ds, [0, -5000.0, -5000 / 900, -5000 / 49 ** 2, -2, -2, -2, 0],
        rtol=1e-6)


def test_quality_tables_gradient_is_straight_through_except_saturated():
    q = tf.constant([3.0, 30.0, 70.0, 100.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(q)
        luma, chroma = jpeg.quality_tables(q)
    j_l = tape.jacobian(luma, q).numpy()  # [4, 8, 8, 4]
    j_c = tape.jacobian(chroma, q).numpy()
    ds = np.array([-5000 / 9, -5000 / 900, -2.0, -2.0])
    tl50, tc50 = _pillow_tables(50)  # the Annex K base tables
    scale = 5000.0 / np.array([3.0, 30.0, 70.0, 100.0])
    scale[2:] = 200 - 2 * np.array([70.0, 100.0])
    for i in range(4):
        # Through the floor and the lower clip (q = 100: every T is 1), but
        # zero where the 255 clip is active (q = 3: T_base * s / 100 >= 256,
        # a saturated entry does not change with q).
        for j, base in ((j_l, tl50), (j_c, tc50)):
            saturated = (base * np.floor(scale[i]) + 50) / 100 >= 256
            expected = np.where(saturated, 0.0, base * ds[i] / 100)
            np.testing.assert_allclose(j[i, :, :, i], expected, rtol=1e-5)
        if i == 0:
            assert saturated.sum() > 20  # the case is exercised
        others = np.delete(np.concatenate([j_l, j_c], 1), i, axis=-1)
        assert np.all(others[i] == 0.0)


# --------------------------------------------------------------------------
# psi^g against the float64 reference and against libjpeg.
# --------------------------------------------------------------------------


def test_diff_jpeg_matches_float64_reference(views):
    worst = np.inf
    for size in SIZES:
        u8 = views[size]
        for rounding in jpeg.ROUNDING_MODES:
            for q in (60, 95, 100) if size == 32 else (80,):
                got = _tf_psi(u8, q, rounding)
                for i in range(u8.shape[0]):
                    p = _psnr(got[i], _ref_psi(u8[i], q, rounding))
                    worst = min(worst, p)
                    assert p >= 80.0, (size, rounding, q, i, p)
    print(f"\nfloat32 TF vs float64 reference: min PSNR {worst:.1f} dB")


@pytest.fixture(scope="module")
def agreement(views):
    """PSNR [variant][size][q] -> per-image array, vs the Pillow decode."""
    variants = ("libjpeg vs clean", "ste", "cubic", "sin", "none")
    res = {v: {s: {} for s in SIZES} for v in variants}
    for size in SIZES:
        u8 = views[size]
        for q in QUALITIES:
            ref = np.stack([_pillow_jpeg(im, q) for im in u8]) / 255.0
            res["libjpeg vs clean"][size][q] = np.array(
                [_psnr(r, c / 255.0) for r, c in zip(ref, u8)])
            for rounding in jpeg.ROUNDING_MODES:
                got = _tf_psi(u8, q, rounding)
                res[rounding][size][q] = np.array(
                    [_psnr(g, r) for g, r in zip(got, ref)])
    head = " | ".join(f"{s}px q={q}" for s in SIZES for q in QUALITIES)
    lines = [f"| variant | {head} |",
             "|---" * (1 + len(SIZES) * len(QUALITIES)) + "|"]
    for v in variants:
        cells = [f"{res[v][s][q].mean():.1f} [{res[v][s][q].min():.1f}]"
                 for s in SIZES for q in QUALITIES]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    print("\nPSNR vs Pillow decode, mean [min] over 9 views, dB:")
    print("\n".join(lines))
    return res


@pytest.mark.parametrize("size,floor", [(32, 40.0), (128, 41.0)])
def test_diff_jpeg_close_to_libjpeg(agreement, size, floor):
    ste = agreement["ste"][size]
    for q in (60, 80, 95):
        assert ste[q].mean() >= floor, (size, q, ste[q])
        assert ste[q].min() >= 35.0, (size, q, ste[q])
    assert ste[100].mean() >= 48.0, ste[100]


@pytest.mark.parametrize("size", SIZES)
def test_diff_jpeg_beats_baselines_at_q60(agreement, size):
    ste = agreement["ste"][size][60].mean()
    for base in ("none", "libjpeg vs clean"):
        other = agreement[base][size][60].mean()
        assert ste >= other + 8.0, (size, base, ste, other)


# --------------------------------------------------------------------------
# Gradients.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_ste_quality_gradient_sign(views, size):
    qs = (30.0, 60.0, 75.0, 90.0, 99.0)
    u8 = views[size]
    n = u8.shape[0]
    x = tf.constant(np.tile(u8, (len(qs), 1, 1, 1)), tf.float32) / 255.0
    q = tf.constant(np.repeat(qs, n), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(q)
        y = jpeg.diff_jpeg(x, q, rounding="ste")
        mse = tf.reduce_mean(tf.square(y - x), axis=[1, 2, 3])
        total = tf.reduce_sum(mse)
    g = tape.gradient(total, q).numpy().reshape(len(qs), n)
    assert np.all(np.isfinite(g))
    assert np.all(g < 0.0), g


@pytest.mark.parametrize("rounding", jpeg.ROUNDING_MODES)
def test_gradients_finite(views, rounding):
    qs = [0.0, 1e-4, 0.5, 1.0, 49.5, 50.0, 60.0, 99.9, 100.0]
    u8 = views[32][:1]
    x = tf.constant(np.repeat(u8, len(qs), axis=0), tf.float32) / 255.0
    # Saturated pixels too.
    x = tf.concat([x[:, :4] * 0.0, x[:, 4:28], x[:, 28:] * 0.0 + 1.0], 1)
    q = tf.constant(qs, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([x, q])
        y = jpeg.diff_jpeg(x, q, rounding=rounding)
        loss = tf.reduce_sum(tf.square(y - 0.5))
    gx, gq = tape.gradient(loss, [x, q])
    assert np.all(np.isfinite(y.numpy()))
    assert np.all(np.isfinite(gx.numpy())) and np.all(np.isfinite(gq.numpy()))
    assert np.any(gx.numpy() != 0.0)
    assert np.any(gq.numpy() != 0.0)


def test_diff_jpeg_odd_size_dtype_and_tf_function():
    rng = np.random.default_rng(2)
    u8 = rng.integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    smooth = np.round(_ramp(28)[:20] * 0.9).astype(np.uint8)
    u8[1] = smooth
    x = tf.constant(u8, tf.float32) / 255.0
    q = tf.constant([75.0, 90.0])
    with tf.GradientTape() as tape:
        tape.watch([x, q])
        y = jpeg.diff_jpeg(x, q)
        loss = tf.reduce_mean(y)
    assert y.shape == (2, 20, 28, 3) and y.dtype == tf.float32
    gx, gq = tape.gradient(loss, [x, q])
    assert gx.shape == x.shape
    assert np.all(np.isfinite(gx.numpy())) and np.all(np.isfinite(gq.numpy()))
    # The padded model still tracks libjpeg on a smooth image.
    assert _psnr(y.numpy()[1], _pillow_jpeg(u8[1], 90) / 255.0) >= 38.0

    # Half-precision input is computed in float32.
    y16 = jpeg.diff_jpeg(tf.cast(x, tf.float16), q)
    assert y16.dtype == tf.float32 and y16.shape == y.shape

    # tf.function with dynamic batch and spatial size gives the same result.
    fn = tf.function(jpeg.diff_jpeg, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None], tf.float32)])
    np.testing.assert_allclose(fn(x, q).numpy(), y.numpy(), atol=1e-6)
    x32 = tf.random.stateless_uniform([3, 32, 32, 3], seed=[1, 2])
    q32 = tf.constant([10.0, 60.0, 100.0])
    np.testing.assert_allclose(fn(x32, q32).numpy(),
                               jpeg.diff_jpeg(x32, q32).numpy(), atol=1e-6)
    # A scalar quality is broadcast to the batch.
    np.testing.assert_allclose(jpeg.diff_jpeg(x, 75.0).numpy()[0],
                               y.numpy()[0], atol=1e-6)


def test_output_clip_gradient_matches_clip_by_value():
    v = tf.constant([-0.5, 0.0, 0.3, 1.0, 1.5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(v)
        a = jpeg._clip_unit(v)
        b = tf.clip_by_value(v, 0.0, 1.0)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(tape.gradient(a, v).numpy(),
                                  tape.gradient(b, v).numpy())


# --------------------------------------------------------------------------
# 8-bit sample rounding and the finite-difference quality gradient.
# --------------------------------------------------------------------------


def test_sample_rounding_is_8bit_and_closer_to_libjpeg(views):
    """sample_rounding=True: the output is on the 8-bit grid, and more of
    its pixels equal the Pillow (libjpeg) decode than without it."""
    u8 = views[32]
    x = tf.constant(u8, tf.float32) / 255.0
    for q in (30, 60, 80, 95):
        ref = np.stack([_pillow_jpeg(im, q) for im in u8]).astype(np.int64)
        plain = jpeg.diff_jpeg(x, float(q)).numpy() * 255.0
        stored = jpeg.diff_jpeg(x, float(q), sample_rounding=True).numpy()
        stored = stored * 255.0
        np.testing.assert_allclose(stored, np.round(stored), atol=2e-3)
        same_plain = np.mean(np.round(plain) == ref)
        same_stored = np.mean(np.round(stored) == ref)
        assert same_stored > same_plain + 0.02, (q, same_plain, same_stored)
        assert _psnr(stored / 255.0, ref / 255.0) >= _psnr(
            plain / 255.0, ref / 255.0), q


def test_sample_rounding_gradients_are_straight_through(views):
    x = tf.constant(views[32][:3], tf.float32) / 255.0
    q = tf.constant([40.0, 70.0, 95.0])
    with tf.GradientTape() as tape:
        tape.watch([x, q])
        y = jpeg.diff_jpeg(x, q, sample_rounding=True)
        loss = tf.reduce_sum(y * y)
    gx, gq = tape.gradient(loss, [x, q])
    assert np.all(np.isfinite(gx.numpy())) and np.all(np.isfinite(gq.numpy()))
    assert np.abs(gx.numpy()).max() > 0 and np.all(gq.numpy() != 0)


def test_fd_quality_gradient_is_the_central_difference(views):
    """quality_gradient="fd": same forward value and image gradient as
    "analytic"; d/dq of a linear read-out is the central difference of
    the float64 reference psi over [q - 5, q + 5] clipped to [1, 100]."""
    u8 = views[32][:4]
    x = tf.constant(u8, tf.float32) / 255.0
    qs = np.array([3.0, 40.0, 75.0, 98.0], np.float32)
    q = tf.constant(qs)
    w = np.random.default_rng(4).standard_normal(u8.shape).astype(np.float32)
    out = {}
    for mode in jpeg.QUALITY_GRADIENTS:
        with tf.GradientTape() as tape:
            tape.watch([x, q])
            y = jpeg.diff_jpeg(x, q, quality_gradient=mode)
            loss = tf.reduce_sum(w * y)
        out[mode] = (y.numpy(),) + tuple(
            g.numpy() for g in tape.gradient(loss, [x, q]))
    np.testing.assert_array_equal(out["fd"][0], out["analytic"][0])
    np.testing.assert_allclose(out["fd"][1], out["analytic"][1], atol=1e-6)
    for i, qi in enumerate(qs):
        hi, lo = min(qi + 5.0, 100.0), max(qi - 5.0, 1.0)
        diff = _ref_psi(u8[i], int(hi)) - _ref_psi(u8[i], int(lo))
        want = np.sum(w[i] * diff) / (hi - lo)
        np.testing.assert_allclose(out["fd"][2][i], want, rtol=2e-3,
                                   atol=2e-3)


def test_bad_quality_gradient_arguments_raise():
    x = tf.zeros([1, 16, 16, 3])
    with pytest.raises(ValueError, match="quality_gradient"):
        jpeg.diff_jpeg(x, 50.0, quality_gradient="spsa")
    with pytest.raises(ValueError, match="fd_step"):
        jpeg.diff_jpeg(x, 50.0, quality_gradient="fd", fd_step=0.0)


def test_unknown_rounding_raises():
    x = tf.zeros([1, 16, 16, 3])
    with pytest.raises(ValueError):
        jpeg.diff_jpeg(x, tf.constant([50.0]), rounding="round")
