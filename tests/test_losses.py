"""Tests of bncr_tf.losses against independent numpy references."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import networks as N


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(
        np.float32)


def np_softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


# --- adversarial losses -----------------------------------------------------

def test_d_and_g_losses_match_numpy():
    real = _normal(7, seed=1) * 3
    fake = _normal(5, seed=2) * 3
    d = losses.d_logistic_loss(real, fake)
    assert float(d["D/real"]) == pytest.approx(np_softplus(-real).mean(),
                                               rel=1e-5)
    assert float(d["D/fake"]) == pytest.approx(np_softplus(fake).mean(),
                                               rel=1e-5)
    assert float(d["D/loss"]) == pytest.approx(
        np_softplus(-real).mean() + np_softplus(fake).mean(), rel=1e-5)
    assert float(d["D/real_logit"]) == pytest.approx(real.mean(), abs=1e-6)
    assert float(d["D/fake_logit"]) == pytest.approx(fake.mean(), abs=1e-6)
    g = losses.g_nonsaturating_loss(fake)
    assert float(g["G/adv"]) == pytest.approx(np_softplus(-fake).mean(),
                                              rel=1e-5)
    assert float(g["G/fake_logit"]) == pytest.approx(fake.mean(), abs=1e-6)
    for value in list(d.values()) + list(g.values()):
        assert value.dtype == tf.float32 and value.shape == ()
    # Large logits do not overflow.
    d = losses.d_logistic_loss(np.float32([100.0]), np.float32([-100.0]))
    assert float(d["D/loss"]) == pytest.approx(2 * math.exp(-100), abs=1e-30)
    # bfloat16 logits are accepted and reported in float32.
    g = losses.g_nonsaturating_loss(tf.constant([1.0, 2.0], tf.bfloat16))
    assert g["G/adv"].dtype == tf.float32


# --- R1 -----------------------------------------------------------------------

def test_r1_matches_analytic_gradient():
    # D(y)_b = sum_{hwc} v * tanh(w * y_bhwc): dD/dy = v w (1 - tanh^2(w y)).
    y = _normal(3, 4, 4, 2, seed=3)
    v, w = 0.7, 1.3

    def d_fn(images):
        return tf.reduce_sum(v * tf.tanh(w * images), axis=[1, 2, 3])

    g = v * w * (1.0 - np.tanh(w * y.astype(np.float64)) ** 2)
    ref = 10.0 * np.mean(np.sum(g ** 2, axis=(1, 2, 3)))
    out = losses.r1_penalty(d_fn, y)
    assert float(out["D/r1"]) == pytest.approx(ref, rel=1e-5)
    out = losses.r1_penalty(d_fn, y, weight=2.5)
    assert float(out["D/r1"]) == pytest.approx(ref / 4, rel=1e-5)


def test_r1_matches_finite_differences_of_a_tiny_discriminator():
    d = N.Discriminator(resolution=16, width=4, dtype="float64")
    y = np.tanh(np.random.default_rng(4).standard_normal((2, 16, 16, 3)))
    d(y)
    r1 = float(losses.r1_penalty(d, tf.constant(y))["D/r1"])
    # Central differences, one perturbed pixel per batch entry.
    h = 1e-6
    pixels = y[0].size
    grads = np.zeros((2, pixels))
    for b in range(2):
        eye = np.eye(pixels).reshape(pixels, 16, 16, 3)
        plus = np.asarray(d(y[b] + h * eye))
        minus = np.asarray(d(y[b] - h * eye))
        grads[b] = (plus - minus) / (2 * h)
    ref = 10.0 * np.mean(np.sum(grads ** 2, axis=1))
    assert r1 == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_r1_is_twice_differentiable(compiled):
    d = N.Discriminator(resolution=16, width=4)
    y = tf.constant(np.tanh(_normal(2, 16, 16, 3, seed=5)))
    d(y)

    def step(images):
        with tf.GradientTape() as tape:
            r1 = losses.r1_penalty(d, images)["D/r1"]
        return r1, tape.gradient(r1, d.trainable_variables)

    if compiled:
        step = tf.function(step)
    r1, grads = step(y)
    assert float(r1) > 0
    kernels = [(v, g) for v, g in zip(d.trainable_variables, grads)
               if "kernel" in v.path]
    assert len(kernels) == 8   # 3 + 2 * 2 convs and the head
    for var, grad in kernels:
        assert grad is not None, var.path
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.any(grad), var.path


def test_r1_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        d = N.Discriminator(resolution=16, width=4)
        y = tf.constant(np.tanh(_normal(2, 16, 16, 3, seed=6)))
        with tf.GradientTape() as tape:
            r1 = losses.r1_penalty(d, y)["D/r1"]
        grads = tape.gradient(r1, d.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert r1.dtype == tf.float32 and float(r1) > 0
    assert all(g is None or np.all(np.isfinite(np.asarray(g)))
               for g in grads)


# --- diversity-sensitive ------------------------------------------------------

def np_ds(outputs, latents, weight=0.02):
    outputs = np.asarray(outputs, np.float64)
    latents = np.asarray(latents, np.float64)
    n = outputs.shape[0] // 2
    total = 0.0
    for i in range(n):
        d_out = np.mean(np.abs(outputs[i] - outputs[n + i]))
        d_z = np.mean(np.abs(latents[i] - latents[n + i]))
        total += d_out / (d_z + 1e-12)
    return -weight * total / n


@pytest.mark.parametrize("shape", [(8, 6, 6, 3), (8, 7, 7), (8,), (8, 1),
                                   (7, 5, 5, 3)])
def test_ds_matches_numpy(shape):
    outputs = _normal(*shape, seed=6)
    latents = _normal(shape[0], 16, seed=7)
    out = losses.diversity_sensitive_loss(outputs, latents, name="Gn/ds")
    assert list(out) == ["Gn/ds"]
    assert out["Gn/ds"].dtype == tf.float32
    assert float(out["Gn/ds"]) == pytest.approx(np_ds(outputs, latents),
                                                rel=1e-5)
    out = losses.diversity_sensitive_loss(outputs, latents, weight=1.0)
    assert float(out["G/ds"]) == pytest.approx(
        np_ds(outputs, latents, weight=1.0), rel=1e-5)


def test_ds_on_generator_outputs_and_gradient():
    z = _normal(6, 128, seed=8)
    g_k = N.KernelGenerator(kernel_size=7, hidden=16)
    g_q = N.QualityGenerator(hidden=16)
    with tf.GradientTape(persistent=True) as tape:
        k_hat = g_k(z)["k_hat"]
        q = g_q(z)["q"]
        ds_k = losses.diversity_sensitive_loss(k_hat, z, name="Gk/ds")
        ds_q = losses.diversity_sensitive_loss(q / 100.0, z, name="Gq/ds")
    assert float(ds_k["Gk/ds"]) == pytest.approx(np_ds(k_hat, z), rel=1e-5)
    assert float(ds_q["Gq/ds"]) == pytest.approx(np_ds(q / 100.0, z),
                                                 rel=1e-5)
    assert float(ds_k["Gk/ds"]) < 0
    grads = tape.gradient(ds_k["Gk/ds"], g_k.trainable_variables)
    assert any(g is not None and np.any(np.asarray(g)) for g in grads)


# --- adaptive consistency -----------------------------------------------------

def test_ac_weights_exact_at_identity_and_monotone():
    assert float(losses.ac_weight_blur(np.float32([0.0]))[0]) == 1.0
    assert float(losses.ac_weight_comp(np.float32([100.0]))[0]) == 1.0
    h = np.linspace(0.0, 4.0, 41).astype(np.float32)
    wk = np.asarray(losses.ac_weight_blur(h))
    assert np.all(np.diff(wk) < 0)
    np.testing.assert_allclose(wk, np.exp(-losses.MU_K * h), rtol=1e-6)
    q = np.linspace(0.0, 100.0, 101).astype(np.float32)
    wq = np.asarray(losses.ac_weight_comp(q))
    assert np.all(np.diff(wq) > 0)   # larger q (less compression) weighs more
    np.testing.assert_allclose(
        wq, np.exp(-losses.MU_Q * (100 - q) / 100), rtol=1e-5)
    # Documented defaults: e^-1 at H = 1 nat and at q = 90.
    assert float(losses.ac_weight_blur(np.float32([1.0]))[0]) == (
        pytest.approx(math.exp(-1)))
    assert float(losses.ac_weight_comp(np.float32([[90.0]]))[0]) == (
        pytest.approx(math.exp(-1), rel=1e-5))


def test_ac_losses_match_numpy():
    x = np.tanh(_normal(4, 5, 5, 3, seed=9))
    xd = np.tanh(_normal(4, 5, 5, 3, seed=10))
    h = np.float32([0.0, 0.5, 1.0, 2.5])
    q = np.float32([100.0, 90.0, 75.0, 60.0])
    per_image = np.mean((x.astype(np.float64) - xd) ** 2, axis=(1, 2, 3))
    out = losses.ac_blur_loss(x, xd, h, mu_k=0.7)
    ref = np.mean(np.exp(-0.7 * h) * per_image)
    assert float(out["G/ac_blur"]) == pytest.approx(ref, rel=1e-5)
    assert float(out["G/ac_blur_weight"]) == pytest.approx(
        np.exp(-0.7 * h).mean(), rel=1e-5)
    out = losses.ac_comp_loss(x, xd, q, mu_q=5.0, weight=3.0)
    ref = 3.0 * np.mean(np.exp(-5.0 * (100 - q) / 100) * per_image)
    assert float(out["G/ac_comp"]) == pytest.approx(ref, rel=1e-5)
    # Identical images: zero loss.
    assert float(losses.ac_blur_loss(x, x, h)["G/ac_blur"]) == 0.0


def _box_blur(x, k):
    """Differentiable stand-in for a per-image blur driven by the kernel."""
    centre = k[:, k.shape[1] // 2, k.shape[2] // 2][:, None, None, None]
    return centre * x + (1.0 - centre) * tf.reduce_mean(
        x, axis=[1, 2], keepdims=True)


def test_ac_gradients_reach_only_the_clean_image():
    z = _normal(4, 128, seed=11)
    g_x = N.ImageGenerator(resolution=8, width=4)
    g_k = N.KernelGenerator(kernel_size=7, hidden=16)
    g_q = N.QualityGenerator(hidden=16)
    with tf.GradientTape(persistent=True) as tape:
        x = g_x(z)
        k = g_k(z)["k"]
        entropy = -tf.reduce_sum(k * tf.math.log(k + 1e-12), axis=[1, 2])
        x_blurred = _box_blur(x, k)
        blur = losses.ac_blur_loss(x, x_blurred, entropy)["G/ac_blur"]
        q = g_q(z)["q"]
        x_comp = x * (q / 100.0)[:, None, None, None]  # stand-in for psi
        comp = losses.ac_comp_loss(x, x_comp, q)["G/ac_comp"]
    for loss in (blur, comp):
        assert float(loss) > 0
        g_x_grads = tape.gradient(loss, g_x.trainable_variables)
        assert any(g is not None and np.any(np.asarray(g))
                   for g in g_x_grads)
    for loss, net in ((blur, g_k), (comp, g_q)):
        for g in tape.gradient(loss, net.trainable_variables):
            assert g is None or not np.any(np.asarray(g))

    # With respect to tensors: the clean term gets d/dx = 2 w (x - x_d) / P,
    # the degraded term and the weight inputs none.
    x = tf.constant(np.tanh(_normal(2, 3, 3, 3, seed=12)))
    xd = tf.constant(np.tanh(_normal(2, 3, 3, 3, seed=13)))
    h = tf.constant([0.0, 1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, xd, h])
        loss = losses.ac_blur_loss(x, xd, h)["G/ac_blur"]
    w = np.exp(-np.asarray(h))[:, None, None, None]
    expected = 2 * w * (np.asarray(x) - np.asarray(xd)) / 27 / 2
    np.testing.assert_allclose(tape.gradient(loss, x), expected, rtol=1e-5)
    for tensor in (xd, h):
        grad = tape.gradient(loss, tensor)
        assert grad is None or not np.any(np.asarray(grad))


def test_ac_sum_is_the_squared_norm_of_eqs_7_and_8():
    """Hand-computed: ||x - x_d||^2 summed over pixels and channels."""
    x = np.zeros([2, 2, 2, 1], np.float32)
    xd = np.zeros([2, 2, 2, 1], np.float32)
    x[0, 0, 0, 0], xd[0, 1, 1, 0] = 1.0, -0.5   # image 0: 1 + 0.25
    x[1, 0, 1, 0] = 2.0                          # image 1: 4
    h = np.float32([0.0, 1.0])
    out = losses.ac_blur_loss(x, xd, h, mu_k=1.0, reduction="sum")
    want = (1.25 * 1.0 + 4.0 * math.exp(-1.0)) / 2
    assert float(out["G/ac_blur"]) == pytest.approx(want, rel=1e-6)
    q = np.float32([100.0, 50.0])
    out = losses.ac_comp_loss(x, xd, q, mu_q=2.0, reduction="sum")
    want = (1.25 * 1.0 + 4.0 * math.exp(-1.0)) / 2
    assert float(out["G/ac_comp"]) == pytest.approx(want, rel=1e-6)
    # "mean" divides by the 4 elements of each image.
    out = losses.ac_blur_loss(x, xd, h, mu_k=1.0, reduction="mean")
    assert float(out["G/ac_blur"]) == pytest.approx(
        (1.25 + 4.0 * math.exp(-1.0)) / 2 / 4, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        losses.ac_blur_loss(x, xd, h, reduction="max")
