"""bncr_tf.metrics.degradation_stats against hand computations and
independent references (numpy loops, scipy.ndimage blur, Pillow JPEG, known
Gaussian noise)."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from bncr_tf.metrics import degradation_stats as ds

skimage_data = pytest.importorskip("skimage.data")


def _grey(values):
    """[N, H, W] -> [N, H, W, 3] with R = G = B (so luma = the value)."""
    return np.repeat(np.asarray(values)[..., None], 3, axis=-1)


def _photos(size=128):
    """Centre crops of three scikit-image photos (uncompressed PNGs)."""
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        img = getattr(skimage_data, name)()
        h, w = img.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        out.append(img[top:top + size, left:left + size, :3])
    return np.stack(out)


def _jpeg(images, quality):
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))
                              .convert("RGB")))
    return np.stack(out)


# --- hand computations ------------------------------------------------------

def test_luma_by_hand():
    img = np.array([[[[10, 20, 30], [255, 255, 255]]]], np.uint8)
    np.testing.assert_allclose(
        ds.luma(img), [[[0.299 * 10 + 0.587 * 20 + 0.114 * 30, 255.0]]],
        atol=1e-9)


def _hh_image():
    """5 x 5 grey image whose four 2x2 blocks have HH = 0.5, 1, 1, 1 (last
    row and column are dropped by the transform)."""
    y = np.full((5, 5), 99.0)
    y[0:2, 0:2] = [[1, 0], [0, 0]]   # (1 - 0 - 0 + 0) / 2 = 0.5
    y[0:2, 2:4] = [[1, 0], [0, 1]]   # (1 + 1) / 2 = 1
    y[2:4, 0:2] = [[2, 0], [0, 0]]   # 1
    y[2:4, 2:4] = [[0, 0], [0, 2]]   # 1
    return y + 10.0


def test_haar_hh_and_noise_by_hand():
    y = _hh_image()
    np.testing.assert_allclose(ds.haar_hh(y[None])[0],
                               [[0.5, 1.0], [1.0, 1.0]], atol=1e-12)
    # Float input: plain median of |HH| = 1.
    np.testing.assert_allclose(ds.noise_level(_grey(y[None])),
                               [1.0 / 0.6745], rtol=1e-12)
    # uint8 input: |HH| on the grid 0.5 -> k = 1, 2, 2, 2; the median bin
    # is k = 2 = [0.75, 1.25] with 1 value below and 3 in it:
    # 0.75 + (4 / 2 - 1) / 3 * 0.5.
    expected = (0.75 + (2.0 - 1.0) / 3.0 * 0.5) / 0.6745
    np.testing.assert_allclose(
        ds.noise_level(_grey(y[None]).astype(np.uint8)), [expected],
        rtol=1e-12)


def test_noise_of_flat_image_is_zero():
    np.testing.assert_array_equal(
        ds.noise_level(np.full((2, 6, 6, 3), 77, np.uint8)), [0.0, 0.0])


def test_sharpness_by_hand_parseval():
    """Checkerboard (all power at (0.5, 0.5) cycles/px) plus a cosine of 2
    cycles per 16 px: with the periodic Hann window the two spectra stay in
    disjoint bins (checker: |f| >= 0.46, cosine: |f| <= 0.2), so the share
    above 0.25 is the checker's windowed energy over the total, both by
    Parseval from spatial sums."""
    n = 16
    i, j = np.mgrid[0:n, 0:n]
    window = np.outer(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n),
                      0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))
    checker = 3.0 * (-1.0) ** (i + j)
    cosine = 20.0 * np.cos(2 * np.pi * 2 * j / n)
    e_checker = np.sum((checker * window) ** 2)
    e_cosine = np.sum((cosine * window) ** 2)
    images = _grey(np.stack([100 + checker, 100 + cosine,
                             100 + checker + cosine]))
    np.testing.assert_allclose(
        ds.sharpness(images),
        [1.0, 0.0, e_checker / (e_checker + e_cosine)], atol=1e-12)


def test_sharpness_against_naive_dft():
    """Loops over the DFT definition, on a random non-square colour image."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (1, 6, 5, 3)).astype(np.uint8)
    y = img[0].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = y.shape
    win = np.outer([0.5 - 0.5 * np.cos(2 * np.pi * a / h) for a in range(h)],
                   [0.5 - 0.5 * np.cos(2 * np.pi * b / w) for b in range(w)])
    z = (y - y.mean()) * win
    high = total = 0.0
    for u in range(h):
        for v in range(w):
            coef = sum(z[a, b] * np.exp(-2j * np.pi * (u * a / h + v * b / w))
                       for a in range(h) for b in range(w))
            fu = u / h if u < h / 2 else u / h - 1  # cycles/px
            fv = v / w if v < w / 2 else v / w - 1
            radius = np.hypot(fu, fv)
            if radius > 0:
                total += abs(coef) ** 2
            if radius > 0.25:
                high += abs(coef) ** 2
    np.testing.assert_allclose(ds.sharpness(img), [high / total], rtol=1e-10)


def test_sharpness_of_white_noise():
    """White noise: the periodic Hann window spreads a flat spectrum
    evenly (circular convolution with three taps), so the expected share is
    the fraction of non-DC bins above 0.25 cycles/px, ~ 1 - pi / 16 (the
    square outside the circle of radius 1/4). Tolerances: 0.005 for the
    mean of 16 images of 128 x 128, 0.04 per image."""
    n = 128
    f = np.array([u / n if u < n / 2 else u / n - 1 for u in range(n)])
    radius = np.hypot(f[:, None], f[None, :])
    expected = (radius > 0.25).sum() / (n * n - 1)
    assert abs(expected - (1 - np.pi / 16)) < 0.002
    rng = np.random.default_rng(0)
    values = ds.sharpness(_grey(rng.standard_normal((16, n, n))))
    np.testing.assert_allclose(values, expected, atol=0.04)
    np.testing.assert_allclose(values.mean(), expected, atol=0.005)


def test_blockiness_by_hand():
    """Y[i, j] = j + 10 [j >= 8] on 16 x 16: the one boundary column jump is
    11, the 14 others 1, vertical jumps 0. Boundary mean (16 * 11 + 16 * 0)
    / 32 = 5.5, elsewhere (14 * 16 * 1 + 14 * 16 * 0) / 448 = 0.5 -> 11."""
    j = np.arange(16)[None, :].repeat(16, axis=0)
    y = j + 10.0 * (j >= 8)
    np.testing.assert_allclose(ds.blockiness(_grey(y[None])), [11.0],
                               rtol=1e-12)
    # Transposed: the same with the roles of rows and columns swapped.
    np.testing.assert_allclose(ds.blockiness(_grey(y.T[None])), [11.0],
                               rtol=1e-12)
    assert np.isnan(ds.blockiness(np.full((1, 16, 16, 3), 5, np.uint8))[0])
    assert np.isnan(ds.sharpness(np.full((1, 16, 16, 3), 5, np.uint8))[0])


def test_separability_by_hand():
    assert ds.separability([1, 2, 3], [4, 5]) == 1.0
    assert ds.separability([4, 5], [1, 2, 3]) == 1.0
    assert ds.separability([1, 2, 3], [1, 2, 3]) == 0.5
    # Best threshold (1 or 3) gets one of each pair right: (1/2 + 1) / 2.
    assert ds.separability([1, 3], [2, 4]) == 0.75
    assert ds.separability([1, np.nan, 3], [2, 4, np.nan]) == 0.75


def test_summarize_and_batch_stats():
    s = ds.summarize([1.0, np.nan, 3.0, 2.0])
    assert s["median"] == 2.0 and s["count"] == 3 and s["total"] == 4
    np.testing.assert_allclose([s["p10"], s["p90"]],
                               np.percentile([1, 2, 3], [10, 90]))
    assert ds.summarize([np.nan])["median"] is None
    out = ds.batch_stats(_photos(32))
    assert set(out["per_image"]) == set(ds.STATS)
    for name in ds.STATS:
        assert out["per_image"][name].shape == (3,)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        ds.noise_level(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError):
        ds.blockiness(np.zeros((1, 8, 8, 3), np.uint8))


# --- independent references -------------------------------------------------

def _smooth_images(count=8, size=128):
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([
        128 + 50 * np.sin(2 * np.pi * (xx + 7 * k) / size)
        * np.cos(2 * np.pi * (yy - 3 * k) / 96) + 0.2 * (xx - size / 2)
        for k in range(count)])


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_noise_level_recovers_known_sigma(sigma):
    """Gaussian noise of std sigma on smooth images (values 48..208, so no
    clipping), rounded to uint8. Rounding adds variance 1/12 per channel.
    Same noise in all channels (grey): luma noise sqrt(sigma^2 + 1/12).
    Independent noise per channel: times |luma weights| = 0.6686.
    Tolerance: 8 % per image (~4 standard errors of the MAD on 4096
    coefficients), 4 % for the median of 8 images."""
    rng = np.random.default_rng(int(sigma))
    base = _smooth_images()
    expected = np.sqrt(sigma ** 2 + 1 / 12)
    grey = np.rint(base + sigma * rng.standard_normal(base.shape))
    est = ds.noise_level(_grey(grey).astype(np.uint8))
    np.testing.assert_allclose(est, expected, rtol=0.08)
    np.testing.assert_allclose(np.median(est), expected, rtol=0.04)
    colour = np.rint(base[..., None]
                     + sigma * rng.standard_normal(base.shape + (3,)))
    est = ds.noise_level(colour.astype(np.uint8))
    gain = np.sqrt(0.299 ** 2 + 0.587 ** 2 + 0.114 ** 2)
    np.testing.assert_allclose(np.median(est), gain * expected, rtol=0.04)
    # Float input (no rounding): sigma itself.
    est = ds.noise_level(_grey(base + sigma * rng.standard_normal(
        base.shape)))
    np.testing.assert_allclose(np.median(est), sigma, rtol=0.04)


def test_noise_level_orders_photos_by_added_noise():
    photos = _photos().astype(np.float64)
    rng = np.random.default_rng(1)
    levels = []
    for sigma in (0.0, 3.0, 6.0, 12.0):
        noisy = np.clip(np.rint(photos + sigma * rng.standard_normal(
            photos.shape)), 0, 255).astype(np.uint8)
        levels.append(ds.noise_level(noisy))
    levels = np.stack(levels)  # [sigma, photo]
    assert np.all(np.diff(levels, axis=0) > 0), levels


def test_sharpness_falls_with_gaussian_blur():
    """scipy.ndimage Gaussian blur of sigma 0 .. 4 px: strictly decreasing
    on float images; on uint8 images up to sigma 2 (beyond it the rounding
    noise, white, outweighs what is left of the image above 0.25
    cycles/px, and the share creeps up again: a floor of the statistic)."""
    photos = _photos().astype(np.float64)
    sigmas = (0.0, 0.5, 1.0, 2.0, 4.0)
    blurred = [ndimage.gaussian_filter(photos, (0, s, s, 0), mode="reflect")
               if s else photos for s in sigmas]
    values = np.stack([ds.sharpness(b) for b in blurred])  # [sigma, photo]
    assert np.all(np.diff(values, axis=0) < 0), values
    assert np.all(values[-1] < 0.01 * values[0])
    values = np.stack([ds.sharpness(np.rint(b).astype(np.uint8))
                       for b in blurred[:4]])
    assert np.all(np.diff(values, axis=0) < 0), values


def test_blockiness_rises_as_jpeg_quality_drops():
    photos = _photos(256)
    raw = ds.blockiness(photos)
    # Uncompressed photos: no grid preference (measured 0.97-0.99).
    np.testing.assert_allclose(raw, 1.0, atol=0.06)
    qualities = (100, 90, 70, 50, 30)
    values = np.stack([ds.blockiness(_jpeg(photos, q)) for q in qualities])
    assert np.all(np.diff(values, axis=0) > 0), values
    assert np.all(values[-1] > 1.3), values
    np.testing.assert_allclose(values[0], 1.0, atol=0.06)


def test_settings_on_skimage_patches():
    """32 px patches degraded by settings B (blur), H (JPEG 60-80) and
    noise: each moves its own statistic's median the expected way
    (measured on 512 patches: sharpness 0.054 -> 0.008, blockiness
    0.99 -> 1.22, noise 2.0 -> 5.4 grey levels)."""
    from bncr_tf import data
    from bncr_tf.degradations import builder
    clean, _ = data.load_clean_uint8("builtin:skimage_patches:count=512", 32)
    med = {}
    for name in ("A", "B", "H", "noise"):
        images = clean if name == "A" else builder.degrade_chunk(
            name, clean, 0, len(clean), 0)[0]
        med[name] = {k: v["median"] for k, v in
                     ds.batch_stats(images)["summary"].items()}
    assert med["B"]["sharpness"] < 0.5 * med["A"]["sharpness"]
    assert med["H"]["blockiness"] > med["A"]["blockiness"] + 0.1
    assert med["noise"]["noise"] > 2 * med["A"]["noise"]
    assert abs(med["A"]["blockiness"] - 1.0) < 0.05
