"""Tests for bncr_tf.degradations.noise (Brooks et al. camera noise)."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from bncr_tf.degradations import noise

# Spec degradations.md section 3, noise std in /255 units: x -> (p5, median,
# p95). Measured independently of this implementation.
SPEC_TABLE = {
    0.0: (0.03, 0.27, 2.9),
    0.5: (2.0, 6.0, 17.8),
    1.0: (2.9, 8.4, 25.0),
}
N_DRAWS = 40000


def _std255(shot, read, x):
    return np.sqrt(np.asarray(read, np.float64)
                   + np.asarray(shot, np.float64) * x) * 255.0


@pytest.fixture(scope="module")
def numpy_levels():
    return noise.camera_noise_levels(np.random.default_rng(1234), N_DRAWS)


@pytest.fixture(scope="module")
def tf_levels():
    shot, read = noise.sample_camera_noise_levels(
        N_DRAWS, tf.constant([7, 11], tf.int32))
    return shot.numpy(), read.numpy()


@pytest.mark.parametrize("x", sorted(SPEC_TABLE))
def test_numpy_noise_std_matches_spec_table(numpy_levels, x):
    shot, read = numpy_levels
    p5, med, p95 = np.percentile(_std255(shot, read, x), [5, 50, 95])
    ref_p5, ref_med, ref_p95 = SPEC_TABLE[x]
    assert med == pytest.approx(ref_med, rel=0.06)
    assert p5 == pytest.approx(ref_p5, rel=0.15, abs=0.01)
    assert p95 == pytest.approx(ref_p95, rel=0.10)


def test_numpy_levels_follow_brooks_law(numpy_levels):
    shot, read = numpy_levels
    assert shot.shape == (N_DRAWS,) and read.shape == (N_DRAWS,)
    assert shot.min() >= 1e-4 and shot.max() <= 1.2e-2
    log_shot, log_read = np.log(shot), np.log(read)
    # log shot uniform on [ln 1e-4, ln 1.2e-2].
    u = (log_shot - math.log(1e-4)) / (math.log(1.2e-2) - math.log(1e-4))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    slope, intercept = np.polyfit(log_shot, log_read, 1)
    assert slope == pytest.approx(2.18, abs=0.02)
    assert intercept == pytest.approx(1.20, abs=0.15)
    resid = log_read - (2.18 * log_shot + 1.20)
    assert np.std(resid) == pytest.approx(0.26, rel=0.03)
    assert abs(np.mean(resid)) < 0.01


def test_numpy_levels_scalar_and_reproducible():
    a = noise.camera_noise_levels(np.random.default_rng(5))
    b = noise.camera_noise_levels(np.random.default_rng(5))
    assert np.ndim(a[0]) == 0 and np.ndim(a[1]) == 0
    assert a == b
    c = noise.camera_noise_levels(np.random.default_rng(6))
    assert a != c


def test_tf_sampler_same_distribution(numpy_levels, tf_levels):
    np_shot, np_read = numpy_levels
    tf_shot, tf_read = tf_levels
    assert tf_shot.dtype == np.float32 and tf_shot.shape == (N_DRAWS,)
    assert stats.ks_2samp(np_shot, tf_shot).pvalue > 1e-3
    assert stats.ks_2samp(np_read, tf_read).pvalue > 1e-3
    for x in SPEC_TABLE:
        q_np = np.percentile(_std255(np_shot, np_read, x), [5, 50, 95])
        q_tf = np.percentile(_std255(tf_shot, tf_read, x), [5, 50, 95])
        np.testing.assert_allclose(q_tf, q_np, rtol=0.08, atol=0.01)


def test_tf_sampler_stateless_and_in_tf_function():
    seed = tf.constant([3, 4], tf.int64)
    a = noise.sample_camera_noise_levels(16, seed)
    fn = tf.function(noise.sample_camera_noise_levels)
    b = fn(tf.constant(16), seed)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    c = noise.sample_camera_noise_levels(16, tf.constant([3, 5], tf.int64))
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    # shot and read are not drawn from one shared stream.
    assert np.all(np.isfinite(a[1].numpy())) and np.all(a[1].numpy() > 0)


def test_camera_noise_matches_numpy_formula():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    eps = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    shot = np.array([1e-4, 1e-3, 5e-3, 1.2e-2], np.float32)
    read = np.array([1e-8, 2e-6, 1e-5, 2e-4], np.float32)
    want = eps.astype(np.float64) * np.sqrt(
        read[:, None, None, None].astype(np.float64)
        + shot[:, None, None, None].astype(np.float64) * x)
    got = noise.camera_noise(x, shot, read, eps).numpy()
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    # Scalar levels broadcast over the batch.
    got_s = noise.camera_noise(x, 2e-3, 1e-5, eps).numpy()
    np.testing.assert_allclose(got_s, eps * np.sqrt(1e-5 + 2e-3 * x),
                               rtol=1e-5, atol=1e-9)
    # Negative variance (only possible for x < 0 inputs) gives zero noise.
    neg = noise.camera_noise(-np.ones((1, 2, 2, 3), np.float32), 1e-2, 1e-4,
                             np.ones((1, 2, 2, 3), np.float32)).numpy()
    np.testing.assert_array_equal(neg, 0.0)


def test_add_camera_noise_std_and_clip():
    x = np.full((2, 64, 64, 3), 0.5, np.float32)
    shot = np.array([4e-3, 1e-3], np.float32)
    read = np.array([1e-4, 1e-6], np.float32)
    y = noise.add_camera_noise(x, shot, read, seed=[1, 2], clip=False).numpy()
    for b in range(2):
        want = math.sqrt(read[b] + shot[b] * 0.5)
        assert np.std(y[b] - x[b]) == pytest.approx(want, rel=0.05)
        assert abs(np.mean(y[b] - x[b])) < 4 * want / 110
    y2 = noise.add_camera_noise(x, shot, read, seed=[1, 2], clip=False)
    np.testing.assert_array_equal(y, y2.numpy())
    x_edge = np.concatenate([np.zeros((1, 16, 16, 3), np.float32),
                             np.ones((1, 16, 16, 3), np.float32)])
    yc = noise.add_camera_noise(x_edge, 1.2e-2, 1e-3, seed=[9, 9]).numpy()
    assert yc.min() >= 0.0 and yc.max() <= 1.0
    assert 0.0 < yc[0].mean() < 0.1 and 0.9 < yc[1].mean() < 1.0
    eps = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    ye = noise.add_camera_noise(x, shot, read, eps=eps, clip=False).numpy()
    np.testing.assert_allclose(
        ye, x + eps * np.sqrt(read + shot * 0.5)[:, None, None, None],
        rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        noise.add_camera_noise(x, shot, read)


def test_gradient_wrt_x_finite_and_correct():
    x = tf.constant(np.linspace(0, 1, 2 * 4 * 4 * 3, dtype=np.float32)
                    .reshape(2, 4, 4, 3))
    eps = tf.constant(np.random.default_rng(2).standard_normal(
        (2, 4, 4, 3)).astype(np.float32))
    shot = tf.constant([3e-3, 1e-2])
    read = tf.constant([0.0, 1e-5])  # read = 0 makes the variance 0 at x = 0
    with tf.GradientTape() as tape:
        tape.watch(x)
        n = noise.camera_noise(x, shot, read, eps)
        loss = tf.reduce_sum(n)
    g = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(g))
    xv = x.numpy().astype(np.float64)
    var = read.numpy()[:, None, None, None] + shot.numpy()[:, None, None,
                                                           None] * xv
    want = np.where(var > 0, eps.numpy() * shot.numpy()[:, None, None, None]
                    / (2 * np.sqrt(np.where(var > 0, var, 1.0))), 0.0)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)
    assert g[0, 0, 0, 0] == 0.0  # guarded sqrt at zero variance
    # The clipped version also has finite gradients.
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(noise.add_camera_noise(x, shot, read, eps=eps))
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
