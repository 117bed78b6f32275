"""LPIPS v0.1 (bncr_tf.metrics.lpips).

Acceptance: the published LPIPS-Alex v0.1 distances of PerceptualSimilarity's
example images (tests/fixtures/lpips, BSD-2-Clause, LICENSE beside them):
ex_ref vs ex_p0 = 0.722 and vs ex_p1 = 0.138 (PerceptualSimilarity's
README / test_network.py, printed to 3 decimals), reproduced within 0.001.

Independent reference: a plain-numpy LPIPS-Alex written here from the
formula (torch-style zero padding, floor max pooling, unit normalisation,
non-negative linear heads, spatial mean, sum over taps) on the same weight
arrays, compared at sizes where padding and pooling remainders matter.

Tests needing the weights skip with the install command when they are
absent; input validation runs without them.
"""

import os

import numpy as np
import pytest

from bncr_tf.metrics import lpips
from bncr_tf.pretrained import weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fixtures", "lpips")
# Measured here with net="vgg" (no published value found for these
# images): regression values, same 0.001 tolerance.
MEASURED_VGG = {"ex_p0": 0.5686, "ex_p1": 0.4217}
TOLERANCE = 1e-3


def _need(name):
    reason = weights.missing_reason(name)
    if reason:
        pytest.skip(reason)


def _image(name):
    from PIL import Image
    with Image.open(os.path.join(FIXTURES, name + ".png")) as image:
        return np.asarray(image.convert("RGB"))[None]


def test_fixture_licence_is_beside_the_images():
    with open(os.path.join(FIXTURES, "LICENSE")) as f:
        text = f.read()
    assert "Richard Zhang" in text and "PerceptualSimilarity" in text


@pytest.mark.parametrize("other", ["ex_p0", "ex_p1"])
def test_alex_reproduces_published_distances(other):
    _need("lpips_alex")
    d = lpips.lpips_distance(_image("ex_ref"), _image(other), net="alex")
    assert d.shape == (1,) and d.dtype == np.float64
    assert abs(d[0] - lpips.PUBLISHED_ALEX[other]) <= TOLERANCE, d


@pytest.mark.parametrize("other", ["ex_p0", "ex_p1"])
def test_vgg_matches_measured_distances(other):
    _need("lpips_vgg")
    d = lpips.lpips_distance(_image("ex_ref"), _image(other), net="vgg")
    assert abs(d[0] - MEASURED_VGG[other]) <= TOLERANCE, d


def test_batched_symmetric_zero_on_identity_and_float_input():
    _need("lpips_alex")
    ref, p0, p1 = _image("ex_ref"), _image("ex_p0"), _image("ex_p1")
    a = np.concatenate([ref, ref, p0, ref])
    b = np.concatenate([p0, p1, ref, ref])
    d = lpips.lpips_distance(a, b, batch_size=3)
    single = [lpips.lpips_distance(a[i:i + 1], b[i:i + 1])[0]
              for i in range(4)]
    np.testing.assert_allclose(d, single, rtol=0, atol=1e-5)
    np.testing.assert_allclose(d[0], d[2], atol=1e-5)  # symmetric
    assert abs(d[3]) < 1e-6
    as_float = lpips.lpips_distance(a / 127.5 - 1.0, b / 127.5 - 1.0)
    np.testing.assert_allclose(as_float, d, atol=1e-5)


# -- an independent numpy LPIPS-Alex ----------------------------------------

def _np_conv(x, kernel, bias, stride, pad):
    """x [H, W, Cin], kernel [k, k, Cin, Cout] (cross-correlation, as torch
    and TensorFlow), zero padding `pad` on every side."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    h = (x.shape[0] - k) // stride + 1
    w = (x.shape[1] - k) // stride + 1
    out = np.zeros((h, w, kernel.shape[3]), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[i:i + stride * (h - 1) + 1:stride,
                      j:j + stride * (w - 1) + 1:stride]
            out += patch @ kernel[i, j]
    return out + bias


def _np_maxpool(x, k=3, s=2):
    h = (x.shape[0] - k) // s + 1
    w = (x.shape[1] - k) // s + 1
    out = np.full((h, w, x.shape[2]), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[i:i + s * (h - 1) + 1:s,
                                    j:j + s * (w - 1) + 1:s])
    return out


def _np_lpips_alex(x0, x1, arrays):
    """One pair of [H, W, 3] images in [-1, 1]."""
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])
    plan = [(4, 2, False), (1, 2, True), (1, 1, True), (1, 1, False),
            (1, 1, False)]

    def taps(x):
        x = (x.astype(np.float64) - shift) / scale
        out = []
        for i, (stride, pad, pool) in enumerate(plan):
            if pool:
                x = _np_maxpool(x)
            x = np.maximum(_np_conv(
                x, arrays[f"AlexNet_0/Conv_{i}/kernel"].astype(np.float64),
                arrays[f"AlexNet_0/Conv_{i}/bias"], stride, pad), 0)
            out.append(x)
        return out

    total = 0.0
    for i, (f0, f1) in enumerate(zip(taps(x0), taps(x1))):
        n0 = f0 / (np.sqrt((f0 ** 2).sum(-1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1 ** 2).sum(-1, keepdims=True)) + 1e-10)
        w = arrays[f"NetLinLayer_{i}/Conv_0/kernel"].reshape(-1)
        total += (((n0 - n1) ** 2) @ w).mean()
    return total


@pytest.mark.parametrize("size", [(32, 32), (45, 67)])
def test_alex_matches_numpy_reference(size):
    _need("lpips_alex")
    arrays = weights.load("lpips_alex")
    rng = np.random.default_rng(sum(size))
    ref = _image("ex_ref")[0].astype(np.float64) / 127.5 - 1
    # Crops of the fixture (natural content) and a noisy copy.
    x0 = ref[:size[0], :size[1]] if size[1] <= 64 else np.tile(
        ref, (1, 2, 1))[:size[0], :size[1]]
    x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), -1, 1)
    expected = _np_lpips_alex(x0, x1, arrays)
    got = lpips.lpips_distance(x0[None].astype(np.float32),
                               x1[None].astype(np.float32))[0]
    assert expected > 0.01
    assert abs(got - expected) <= 1e-4 * max(1.0, expected), (got, expected)


# -- validation (no weights needed) -----------------------------------------

def test_input_validation():
    a = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        lpips.lpips_distance(a, a[:1])
    with pytest.raises(ValueError, match="at least 32"):
        lpips.lpips_distance(a[:, :31], a[:, :31])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        lpips.lpips_distance(a.astype(np.float32) + 255,
                             a.astype(np.float32))
    with pytest.raises(ValueError, match="mixed"):
        lpips.lpips_distance(a, a.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        lpips.lpips_distance(a[..., 0], a[..., 0])


def test_head_weights_must_be_non_negative():
    model = lpips.LPIPS("alex")
    model.features(np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(4)
    arrays = {}
    for i, conv in enumerate(model.features.convs):
        kernel, bias = conv.get_weights()
        arrays[f"AlexNet_0/Conv_{i}/kernel"] = kernel
        arrays[f"AlexNet_0/Conv_{i}/bias"] = bias
    for i, c in enumerate(model.features.tap_channels):
        arrays[f"NetLinLayer_{i}/Conv_0/kernel"] = rng.uniform(
            0, 1, (1, 1, c, 1)).astype(np.float32)
    model.load_arrays(arrays)
    arrays["NetLinLayer_2/Conv_0/kernel"][0, 0, 5, 0] = -0.1
    with pytest.raises(ValueError, match="negative"):
        model.load_arrays(arrays)


def test_float32_under_a_mixed_precision_policy():
    """Training sets mixed_bfloat16 globally; LPIPS still computes in
    float32 (same value as under the float32 policy)."""
    _need("lpips_alex")
    import keras
    a, b = _image("ex_ref"), _image("ex_p1")
    expected = lpips.lpips_distance(a, b)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = lpips.LPIPS("alex")
        model.features(np.zeros((1, 64, 64, 3), np.float32))
        model.load_arrays(weights.load("lpips_alex"))
        got = lpips.lpips_distance(a, b, model=model)
        assert all(w.dtype == "float32" for w in model.weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
