"""Tests for bncr_tf.degradations.kernels against independent references."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, ndimage

from bncr_tf.degradations import kernels as B

EXPL_CHOICES = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003)


# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------


def _pixel_disk_area(x0, x1, y0, y1, r):
    """Area of [x0, x1] x [y0, y1] inside the disk of radius r (quadrature)."""
    def chord(x):
        half = math.sqrt(max(r * r - x * x, 0.0))
        return max(0.0, min(y1, half) - max(y0, -half))

    lo, hi = max(x0, -r), min(x1, r)
    if lo >= hi:
        return 0.0
    # Break points where the arc crosses y = y0 or y = y1, plus x = 0.
    points = [0.0]
    for y in (y0, y1):
        if abs(y) < r:
            s = math.sqrt(r * r - y * y)
            points += [s, -s]
    points = sorted(p for p in points if lo < p < hi)
    value, _ = integrate.quad(chord, lo, hi, points=points or None,
                              epsabs=1e-13, epsrel=1e-13, limit=200)
    return value


def _reference_trajectory(length, seed, iters=2000):
    """Plain per-step loop over the documented draw order (spec 2.1)."""
    rng = np.random.default_rng(seed)
    expl = EXPL_CHOICES[int(rng.integers(6))]
    u = rng.random(4)
    centripetal, p_big, g_shake = 0.7 * u[0], 0.2 * u[1], 10.0 * u[2]
    theta0 = 2.0 * math.pi * u[3]
    u_big = rng.random(iters - 1)
    u_angle = rng.random(iters - 1)
    normals = rng.standard_normal((iters - 1, 2))
    step = length / (iters - 1)
    v = expl * complex(math.cos(theta0), math.sin(theta0))
    x = [0j]
    for t in range(iters - 1):
        if u_big[t] < p_big * expl:
            jump = 2 * v * complex(math.cos(math.pi + u_angle[t] - 0.5),
                                   math.sin(math.pi + u_angle[t] - 0.5))
        else:
            jump = 0
        g = complex(normals[t, 0], normals[t, 1])
        v = v + jump + expl * (g_shake * g - centripetal * x[-1]) * step
        v = step * v / abs(v)
        x.append(x[-1] + v)
    return np.array(x), expl


def _reference_splat(path, exposure, size):
    """Loop-based centroid-centred bilinear rasterisation (spec 2.2)."""
    iters = len(path)
    n_exp = min(int(round(exposure * iters)), iters - 1)
    pts = path[1:n_exp + 1]
    pts = pts - pts.mean()
    kernel = np.zeros((size, size))
    half = size // 2
    for p in pts:
        col, row = p.real + half, p.imag + half
        c0, r0 = math.floor(col), math.floor(row)
        fc, fr = col - c0, row - r0
        for rr, wr in ((r0, 1 - fr), (r0 + 1, fr)):
            for cc, wc in ((c0, 1 - fc), (c0 + 1, fc)):
                if wr * wc > 0:
                    kernel[rr, cc] += wr * wc
    return kernel / kernel.sum()


def _reference_blur(images, kernels):
    """Per image and channel scipy convolution in float64, mirror borders."""
    images = np.asarray(images, np.float64)
    out = np.empty_like(images)
    for b in range(images.shape[0]):
        k = np.asarray(kernels[b] if kernels.ndim == 3 else kernels,
                       np.float64)
        for c in range(images.shape[-1]):
            out[b, ..., c] = ndimage.convolve(images[b, ..., c], k,
                                              mode="mirror")
    return out


def _rngs(seeds):
    return [np.random.default_rng(s) for s in seeds]


# ---------------------------------------------------------------------------
# Disk kernels
# ---------------------------------------------------------------------------


def test_disk_matches_matlab_r1_r2():
    r1 = np.array([[0.0251, 0.1453, 0.0251],
                   [0.1453, 0.3183, 0.1453],
                   [0.0251, 0.1453, 0.0251]])
    r2 = np.array([[0, 0.0170, 0.0381, 0.0170, 0],
                   [0.0170, 0.0784, 0.0796, 0.0784, 0.0170],
                   [0.0381, 0.0796, 0.0796, 0.0796, 0.0381],
                   [0.0170, 0.0784, 0.0796, 0.0784, 0.0170],
                   [0, 0.0170, 0.0381, 0.0170, 0]])
    k1 = B.disk_kernel(1.0, 3)
    k2 = B.disk_kernel(2.0, 5)
    assert k1.dtype == tf.float32 and k1.shape == (3, 3)
    np.testing.assert_allclose(k1.numpy(), r1, atol=1e-4)
    np.testing.assert_allclose(k2.numpy(), r2, atol=1e-4)
    assert abs(k2.numpy()[2, 2] - 1 / (4 * math.pi)) < 1e-6


def test_disk_other_radii_values():
    k = B.disk_kernel(0.75, 3).numpy()
    np.testing.assert_allclose(k[[0, 0, 2, 2], [0, 2, 0, 2]], 0.0010,
                               atol=1e-4)
    np.testing.assert_allclose(k[[0, 1, 1, 2], [1, 0, 2, 1]], 0.1075,
                               atol=1e-4)
    assert abs(k[1, 1] - 0.5659) < 1e-4
    k = B.disk_kernel(1.5, 3).numpy()
    np.testing.assert_allclose(k[[0, 0, 2, 2], [0, 2, 0, 2]], 0.0772,
                               atol=1e-4)
    np.testing.assert_allclose(k[[0, 1, 1, 2], [1, 0, 2, 1]], 0.1375,
                               atol=1e-4)
    assert abs(k[1, 1] - 0.1415) < 1e-4


def test_disk_support_sizes():
    expected = {0.5: 1, 1.0: 3, 1.5: 3, 2.0: 5, 2.5: 5, 3.0: 7, 4.0: 9,
                0.51: 3, 1.51: 5, 3.6: 9}
    for r, n in expected.items():
        assert B.disk_support(r) == n, r
        # The kernel's non-zero taps occupy exactly the central n x n square.
        k = B.disk_kernel(r, 11).numpy()
        rows = np.nonzero(k.sum(axis=1) > 0)[0]
        assert rows.min() == 5 - n // 2 and rows.max() == 5 + n // 2, r


def test_disk_half_is_identity_and_padding():
    np.testing.assert_array_equal(B.disk_kernel(0.5, 7).numpy(),
                                  B.identity_kernel(7).numpy())
    small = B.disk_kernel(1.3, 3).numpy()
    big = B.disk_kernel(1.3, 9).numpy()
    np.testing.assert_allclose(big[3:6, 3:6], small, atol=1e-7)
    assert big.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(big[:3] == 0) and np.all(big[:, 6:] == 0)


def test_disk_matches_quadrature():
    rng = np.random.default_rng(0)
    radii = np.concatenate([[0.5, 1.5, 2.5, 4.0], rng.uniform(0.5, 4, 5)])
    size = 9
    kernels = B.disk_kernel(radii, size).numpy().astype(np.float64)
    assert kernels.shape == (len(radii), size, size)
    for k, r in zip(kernels, radii):
        ref = np.array([[_pixel_disk_area(j - 4.5, j - 3.5, i - 4.5, i - 3.5,
                                          r)
                         for j in range(size)] for i in range(size)])
        assert ref.sum() == pytest.approx(math.pi * r * r, rel=1e-9)
        # float32 output: compare areas at float32 precision.
        np.testing.assert_allclose(k * math.pi * r * r, ref, atol=1e-6)


def test_disk_batch_tensor_and_errors():
    radii = tf.constant([0.7, 1.9, 3.3])
    batch = B.disk_kernel(radii, 7).numpy()
    for i, r in enumerate([0.7, 1.9, 3.3]):
        np.testing.assert_allclose(batch[i], B.disk_kernel(float(r), 7),
                                   atol=1e-6)
    assert B.disk_kernel(tf.constant(1.0), 3).shape == (3, 3)
    with pytest.raises(ValueError):
        B.disk_kernel(0.0, 3)
    with pytest.raises(ValueError):
        B.disk_kernel(-1.0, 3)
    with pytest.raises(ValueError):
        B.disk_kernel(1.6, 3)  # needs 5x5
    with pytest.raises(ValueError):
        B.disk_kernel([1.0, 4.0], 7)  # 4.0 needs 9x9
    with pytest.raises(ValueError):
        B.disk_kernel(1.0, 4)


def test_disk_entropies_match_spec():
    table = {0.5: 0.0, 0.6: 0.659, 0.75: 1.309, 1.0: 1.855, 1.5: 2.159,
             2.0: 2.858, 3.0: 3.541, 4.0: 4.068}
    radii = list(table)
    h = B.kernel_entropy(B.disk_kernel(radii, 9)).numpy()
    np.testing.assert_allclose(h, list(table.values()), atol=2e-3)


# ---------------------------------------------------------------------------
# Identity kernel and entropy
# ---------------------------------------------------------------------------


def test_identity_kernel():
    k = B.identity_kernel(7)
    assert k.dtype == tf.float32 and k.shape == (7, 7)
    ref = np.zeros((7, 7))
    ref[3, 3] = 1
    np.testing.assert_array_equal(k.numpy(), ref)
    kb = B.identity_kernel(5, batch=3)
    assert kb.shape == (3, 5, 5)
    assert np.all(kb.numpy()[:, 2, 2] == 1) and kb.numpy().sum() == 3
    with pytest.raises(ValueError):
        B.identity_kernel(4)


def test_entropy_uniform_identity_and_gradient():
    for n, ref in ((3, 2.1972), (5, 3.2189), (7, 3.8918)):
        k = tf.fill([n, n], 1.0 / (n * n))
        assert float(B.kernel_entropy(k)) == pytest.approx(ref, abs=1e-4)
        assert float(B.kernel_entropy(k)) == pytest.approx(
            math.log(n * n), abs=1e-5)
    h = B.kernel_entropy(B.identity_kernel(7, batch=2))
    assert h.shape == (2,)
    assert np.all(np.abs(h.numpy()) < 1e-6)
    k = tf.Variable(B.identity_kernel(5))
    with tf.GradientTape() as tape:
        h = B.kernel_entropy(k)
    g = tape.gradient(h, k).numpy()
    assert np.all(np.isfinite(g))
    # d/dk (-k ln k) = -ln k - 1: -1 at the centre tap, large positive at 0.
    assert g[2, 2] == pytest.approx(-1.0, abs=1e-6)
    assert g[0, 0] > 10


# ---------------------------------------------------------------------------
# Motion kernels
# ---------------------------------------------------------------------------


def test_trajectory_matches_reference_loop():
    for seed, length in ((3, 5.0), (11, 10.0)):
        path, expl = B.motion_trajectory(length, np.random.default_rng(seed))
        ref, ref_expl = _reference_trajectory(length, seed)
        assert path.dtype == np.complex128 and path.shape == (2000,)
        assert expl == ref_expl and expl in EXPL_CHOICES
        np.testing.assert_allclose(path, ref, atol=1e-10)
        # Renormalised velocity: the path is exactly `length` long.
        assert np.abs(np.diff(path)).sum() == pytest.approx(length, rel=1e-9)
    path, expl = B.motion_trajectory(5.0, 3, iters=100, expl=0.004)
    assert expl == 0.004 and path.shape == (100,) and path[0] == 0


def test_motion_kernel_matches_reference_splat():
    for seed, length, exposure, size in ((5, 5.0, 1.0, 7), (6, 5.0, 0.1, 7),
                                         (7, 10.0, 0.5, 11)):
        k = B.motion_kernel(length, exposure, size, seed)
        assert k.dtype == tf.float32 and k.shape == (size, size)
        path, _ = _reference_trajectory(length, seed)
        ref = _reference_splat(path, exposure, size)
        np.testing.assert_allclose(k.numpy(), ref, atol=1e-6)


def test_motion_kernel_properties_and_fit():
    ii = np.arange(7)
    for exposure in (0.1, 0.5, 1.0):
        k, expls = B.sample_motion_kernels(
            5.0, exposure, 7, _rngs(range(100, 250)))
        assert k.dtype == np.float32 and k.shape == (150, 7, 7)
        assert set(np.unique(expls)) <= set(EXPL_CHOICES)
        assert np.all(k >= 0)
        np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
        k64 = k.astype(np.float64)
        np.testing.assert_allclose((k64 * ii[:, None]).sum(axis=(1, 2)), 3.0,
                                   atol=2e-6)
        np.testing.assert_allclose((k64 * ii[None, :]).sum(axis=(1, 2)), 3.0,
                                   atol=2e-6)
    # No mass lost in 7x7 (L=5) and 11x11 (L=10): the same paths rasterised
    # in a large window put nothing outside the central square.
    for length, size, n in ((5.0, 7, 300), (10.0, 11, 200)):
        big, _ = B.sample_motion_kernels(length, 1.0, 21, _rngs(range(n)))
        lo, hi = 10 - size // 2, 10 + size // 2 + 1
        outside = big.sum(axis=(1, 2)) - big[:, lo:hi, lo:hi].sum(axis=(1, 2))
        assert np.all(outside < 1e-6)
        small, _ = B.sample_motion_kernels(length, 1.0, size, _rngs(range(n)))
        np.testing.assert_allclose(small, big[:, lo:hi, lo:hi], atol=1e-6)
    # A too-small window must be refused, not silently truncated.
    with pytest.raises(ValueError, match="5x5"):
        B.sample_motion_kernels(10.0, 1.0, 5, _rngs(range(20)))


def test_motion_entropy_distribution_l5():
    spec = {0.1: (0.62, 0.71), 0.5: (1.54, 1.79), 1.0: (1.92, 2.34)}
    for exposure, (mean, top) in spec.items():
        k, _ = B.sample_motion_kernels(
            5.0, exposure, 7, _rngs(range(1000, 1200)))
        h = B.kernel_entropy(k).numpy()
        assert abs(h.mean() - mean) < 0.15, (exposure, h.mean())
        assert h.max() < top + 0.2, (exposure, h.max())
    # Entropy grows with exposure for the same paths.
    h_short = B.kernel_entropy(
        B.sample_motion_kernels(5.0, 0.1, 7, _rngs(range(50)))[0]).numpy()
    h_long = B.kernel_entropy(
        B.sample_motion_kernels(5.0, 1.0, 7, _rngs(range(50)))[0]).numpy()
    assert np.all(h_long > h_short)


def test_motion_seeding_and_batch_independence():
    a = B.motion_kernel(5.0, 0.5, 7, 42).numpy()
    b = B.motion_kernel(5.0, 0.5, 7, np.random.default_rng(42)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, B.motion_kernel(5.0, 0.5, 7, 43).numpy())
    seeds = [7, 8, 9, 10]
    lengths = [5.0, 10.0, 5.0, 3.0]
    exposures = [1.0, 0.5, 0.1, 1.0]
    expls = [None, 0.003, None, 0.01]
    batch, used = B.sample_motion_kernels(lengths, exposures, 11,
                                          _rngs(seeds), expls=expls)
    assert used[1] == 0.003 and used[3] == 0.01
    for i in range(4):
        single = B.motion_kernel(lengths[i], exposures[i], 11, seeds[i],
                                 expl=expls[i]).numpy()
        np.testing.assert_array_equal(batch[i], single)
    # Changing another kernel's generator leaves kernel 1 untouched.
    other, _ = B.sample_motion_kernels(lengths, exposures, 11,
                                       _rngs([99, 8, 98, 97]), expls=expls)
    np.testing.assert_array_equal(other[1], batch[1])
    assert not np.array_equal(other[0], batch[0])


# ---------------------------------------------------------------------------
# blur
# ---------------------------------------------------------------------------


def _test_images(batch=3, height=12, width=10, seed=0):
    return np.random.default_rng(seed).random(
        (batch, height, width, 3)).astype(np.float32)


def test_blur_matches_scipy_disk_and_motion():
    x = _test_images()
    disks = B.disk_kernel([0.8, 1.7, 2.9], 7).numpy()
    motion, _ = B.sample_motion_kernels(5.0, [1.0, 0.5, 1.0], 7,
                                        _rngs([1, 2, 3]))
    # The motion kernels are asymmetric, so a missing flip would show.
    assert np.abs(motion - motion[:, ::-1, ::-1]).max() > 1e-2
    for kernels in (disks, motion):
        out = B.blur(x, kernels)
        assert out.dtype == tf.float32 and out.shape == x.shape
        np.testing.assert_allclose(out.numpy(), _reference_blur(x, kernels),
                                   atol=1e-5)
    shared = motion[0]
    np.testing.assert_allclose(B.blur(x, shared).numpy(),
                               _reference_blur(x, shared), atol=1e-5)


def test_blur_identity_and_low_precision_inputs():
    x = _test_images()
    out = B.blur(x, B.identity_kernel(7, batch=3))
    np.testing.assert_allclose(out.numpy(), x, atol=1e-7)
    out = B.blur(tf.cast(x, tf.bfloat16), B.identity_kernel(5))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(),
                               tf.cast(tf.cast(x, tf.bfloat16), tf.float32),
                               atol=1e-7)


def test_blur_shape_errors():
    x = _test_images(height=6, width=8)
    with pytest.raises(ValueError):
        B.blur(x, np.ones((3, 4, 4), np.float32) / 16)
    with pytest.raises(ValueError):
        B.blur(x, B.identity_kernel(13))  # K//2 = 6 >= H = 6
    with pytest.raises(ValueError):
        B.blur(x, B.identity_kernel(3, batch=2))
    with pytest.raises(ValueError):
        B.blur(x[0], B.identity_kernel(3))


def test_blur_tf_function_dynamic_batch():
    fn = tf.function(B.blur, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, 7, 7], tf.float32)])
    for batch in (2, 5):
        x = _test_images(batch=batch, seed=batch)
        k, _ = B.sample_motion_kernels(5.0, 1.0, 7, _rngs(range(batch)))
        out = fn(x, k)
        assert out.shape == x.shape
        np.testing.assert_allclose(out.numpy(), _reference_blur(x, k),
                                   atol=1e-5)


def test_blur_gradients():
    x = tf.Variable(_test_images(batch=2))
    k0, _ = B.sample_motion_kernels(5.0, 1.0, 7, _rngs([4, 5]))
    k = tf.Variable(k0)
    w = tf.constant(np.random.default_rng(1).normal(size=x.shape),
                    tf.float32)

    def loss_fn(kernels):
        return tf.reduce_sum(w * B.blur(x, kernels))

    with tf.GradientTape() as tape:
        loss = loss_fn(k)
    gx, gk = tape.gradient(loss, [x, k])
    for g in (gx, gk):
        assert np.all(np.isfinite(g.numpy()))
        assert np.abs(g.numpy()).max() > 0
    # The loss is linear in the kernel, so a central difference is exact up
    # to float32 rounding.
    eps = 0.05
    delta = np.zeros(k0.shape, np.float32)
    delta[1, 2, 4] = eps
    numeric = (float(loss_fn(k0 + delta)) - float(loss_fn(k0 - delta))) / (
        2 * eps)
    assert gk.numpy()[1, 2, 4] == pytest.approx(numeric, rel=1e-3, abs=1e-3)
    # And analytically: dL/dk[b, u, v] = sum w * x shifted by (u, v) offsets.
    xp = np.pad(x.numpy()[1].astype(np.float64), ((3, 3), (3, 3), (0, 0)),
                mode="reflect")
    h, wd = x.shape[1], x.shape[2]
    shifted = xp[3 - (2 - 3):3 - (2 - 3) + h, 3 - (4 - 3):3 - (4 - 3) + wd]
    assert gk.numpy()[1, 2, 4] == pytest.approx(
        float((w.numpy()[1] * shifted).sum()), rel=1e-4, abs=1e-4)
