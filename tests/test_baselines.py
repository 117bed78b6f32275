"""Tests of the restoration baselines (bncr_tf.baselines).

References are independent of the implementation:

* the alpha = 2/3 w-step against a brute-force grid search of its 1-D
  objective (grid step 1e-5; tolerance 2e-5);
* Krishnan-Fergus with alpha = 2 at a fixed beta: the w-step is then
  w = beta v / (beta + 2) and HQS minimises the quadratic
  lam/2 ||k * x - y||^2 + beta / (beta + 2) sum_j ||f_j * x||^2, whose
  minimiser solves dense normal equations built from np.roll circulant
  matrices (no FFT); tolerance 1e-8 after 400 iterations (float64);
* the kernel centring against a circular convolution by np.roll;
* PSNR against scikit-image's Wiener deconvolution with the true kernel
  (best of four balance values, same reflect padding);
* the JPEG constraint set against a DCT-II matrix written from its
  cosine formula; PSNR of the deblocked images against the JPEG input.
"""

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf.baselines import deblocking
from bncr_tf.baselines import deconvolution as kf
from bncr_tf.degradations import builder


def _psnr(a, b):
    """Mean per-image PSNR (tf.image.psnr, 8-bit peak)."""
    return float(tf.reduce_mean(tf.image.psnr(
        tf.cast(a, tf.float32), tf.cast(b, tf.float32), 255.0)))


@pytest.fixture(scope="module")
def heldout():
    """64 patches of the held-out photos (skimage photos 3-5; the defaults
    were tuned on photos 0-2, docs/results.md)."""
    from bncr_tf import data  # pylint: disable=import-outside-toplevel
    images, labels = data.load_clean_uint8(
        "builtin:skimage_patches:count=192", 32, seed=2)
    return images[labels >= 3][:64]


@pytest.mark.parametrize("beta", [1.0, 2.0 * np.sqrt(2.0), 22.6, 256.0])
def test_w_step_two_thirds_matches_grid_search(beta):
    v = np.linspace(-2.0, 2.0, 801)
    grid = np.linspace(-2.5, 2.5, 500001)
    best = np.empty_like(v)
    for i, vi in enumerate(v):
        obj = np.abs(grid) ** (2.0 / 3.0) + 0.5 * beta * (grid - vi) ** 2
        best[i] = grid[np.argmin(obj)]
    w = kf.w_step(v, beta)
    np.testing.assert_allclose(w, best, atol=2e-5)
    assert np.any(w == 0) and np.any(w != 0)


def _circulant(kernel, shape):
    """Dense matrix of the true circular convolution x -> k * x on a
    flattened [H, W] image, centre tap at (K//2, K//2), built with np.roll."""
    height, width = shape
    c = kernel.shape[0] // 2
    mat = np.zeros((height * width, height * width))
    for i in range(height * width):
        e = np.zeros(height * width)
        e[i] = 1.0
        e = e.reshape(shape)
        out = np.zeros(shape)
        for a in range(kernel.shape[0]):
            for b in range(kernel.shape[1]):
                out += kernel[a, b] * np.roll(e, (a - c, b - c), axis=(0, 1))
        mat[:, i] = out.ravel()
    return mat


def test_kernel_centring_matches_circular_convolution():
    rng = np.random.default_rng(0)
    kernel = rng.random((5, 5))
    kernel /= kernel.sum()
    image = rng.random((9, 11))
    otf = kf.psf2otf(kernel[None], image.shape)[0]
    fast = np.fft.irfft2(otf * np.fft.rfft2(image), s=image.shape)
    dense = (_circulant(kernel, image.shape) @ image.ravel()).reshape(
        image.shape)
    np.testing.assert_allclose(fast, dense, atol=1e-12)


def test_alpha_two_is_the_closed_form_quadratic_solve():
    rng = np.random.default_rng(1)
    shape, lam, beta = (6, 7), 50.0, 2.0
    kernel = rng.random((3, 3))
    kernel /= kernel.sum()
    y = rng.random(shape)
    k_mat = _circulant(kernel, shape)
    d1 = _circulant(np.array([[0, 0, 0], [-1, 1, 0], [0, 0, 0]], float),
                    shape)  # x_i - x_{i-1} horizontally
    d2 = _circulant(np.array([[0, -1, 0], [0, 1, 0], [0, 0, 0]], float),
                    shape)  # vertically
    weight = beta / (beta + 2.0)
    normal = lam * k_mat.T @ k_mat + 2.0 * weight * (d1.T @ d1 + d2.T @ d2)
    expected = np.linalg.solve(normal, lam * k_mat.T @ y.ravel())
    x = kf.deconvolve_circular(y[None].astype(np.float64), kernel[None],
                               lam=lam, alpha=2.0, betas=[beta],
                               inner_iters=400)[0]
    np.testing.assert_allclose(x.ravel(), expected, atol=1e-8)


def _wiener_best(blurred, clean, kernels, keep):
    """skimage Wiener with the true kernel, reflect-padded like `deblur`,
    best balance in hindsight per set (an advantage to Wiener)."""
    # pylint: disable-next=import-outside-toplevel
    from skimage.restoration import wiener
    pad = blurred.shape[1] // 2
    best = -np.inf
    for balance in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
        out = np.empty(blurred.shape, np.float64)
        for i, (img, k) in enumerate(zip(blurred, kernels)):
            padded = np.pad(img / 255.0, ((pad, pad), (pad, pad), (0, 0)),
                            mode="reflect")
            for c in range(3):
                out[i, ..., c] = wiener(padded[..., c], k, balance,
                                        clip=False)[pad:-pad, pad:-pad]
        restored = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
        best = max(best, _psnr(clean[keep], restored[keep]))
    return best


@pytest.mark.parametrize("setting", ["B", "C"])
def test_krishnan_fergus_beats_wiener_on_photos(heldout, setting):
    blurred, params = builder.degrade_chunk(setting, heldout, 0,
                                            len(heldout), seed=5)
    lam = kf.default_lambda("disk" if setting == "B" else "motion", 7)
    restored = kf.deblur(blurred, params.kernel, lam=lam)
    assert restored.shape == blurred.shape and restored.dtype == np.uint8
    # Images the blur left bit-identical (a near-identity kernel, e.g. a
    # short exposure) have infinite PSNR and are left out of every mean.
    keep = np.any(blurred != heldout, axis=(1, 2, 3))
    assert keep.sum() >= 50
    ours = _psnr(heldout[keep], restored[keep])
    wiener_db = _wiener_best(blurred, heldout, params.kernel, keep)
    before = _psnr(heldout[keep], blurred[keep])
    assert ours >= wiener_db, (ours, wiener_db, before)
    assert ours > before + 3.0, (ours, before)


def _dct_matrix():
    """Orthonormal 8-point DCT-II from its cosine formula."""
    n = np.arange(8)
    mat = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 16.0)
    mat[0] *= np.sqrt(1.0 / 8.0)
    mat[1:] *= np.sqrt(2.0 / 8.0)
    return mat


def _block_coefficients(plane):
    """[H, W] -> [H/8, W/8, 8, 8] with the independent DCT matrix."""
    d = _dct_matrix()
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    return d @ blocks @ d.T


def test_projection_keeps_coefficients_in_quantisation_intervals(heldout):
    jpeg, params = builder.degrade_chunk("H", heldout[:16], 0, 16, seed=3)
    rgb_to_ycc = deblocking._RGB_TO_YCC  # pylint: disable=protected-access
    ycc = jpeg.astype(np.float64) @ rgb_to_ycc.T
    planes = ycc[..., 0] - 128.0
    luma, _ = deblocking.quantisation_tables(params.jpeg_quality)
    out = deblocking.deblock_planes(planes, luma, sigma=1.0, mu=1.0,
                                    iters=3)
    assert np.abs(out - planes).max() > 0.5  # it did change the planes
    for i in range(len(planes)):
        table = luma[i]
        coded = np.round(_block_coefficients(planes[i]) / table)
        got = _block_coefficients(out[i])
        assert np.all(got >= (coded - 0.5) * table - 1e-7)
        assert np.all(got <= (coded + 0.5) * table + 1e-7)


def test_deblocking_does_not_lower_psnr_and_keeps_range(heldout):
    jpeg, params = builder.degrade_chunk("J", heldout, 0, len(heldout),
                                         seed=4)
    out = deblocking.deblock(jpeg, params.jpeg_quality)
    assert out.shape == jpeg.shape and out.dtype == np.uint8
    gain = _psnr(heldout, out) - _psnr(heldout, jpeg)
    assert gain >= 0.0, gain
    high = params.jpeg_quality >= deblocking.DEFAULT_Q_MAX
    np.testing.assert_array_equal(out[high], jpeg[high])


def test_deblocking_rejects_uncompressed_images():
    images = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="quality"):
        deblocking.deblock(images, np.array([70, 0]))
    with pytest.raises(ValueError, match="uint8"):
        deblocking.deblock(images.astype(np.float32), np.array([70, 70]))


def test_deblur_rejects_mismatched_kernels():
    with pytest.raises(ValueError, match="kernels"):
        kf.deblur(np.zeros((2, 16, 16, 3), np.uint8),
                  np.zeros((3, 7, 7), np.float32))


def test_default_lambda_by_blur_type_and_kernel_size():
    assert kf.default_lambda("disk", 7) == 1e4
    assert kf.default_lambda("motion", 7) == 2e4
    assert kf.default_lambda("disk", 11) == 5e4
    assert kf.default_lambda("disk", 15) == 5e4  # nearest measured K
