"""Tests of bncr_tf.networks: shapes, ranges, parameter counts, numpy
references of the blocks, serialisation, mixed precision, priors and noise
transforms."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import networks as N
from bncr_tf.degradations import jpeg
from bncr_tf.networks import layers as L
from bncr_tf.networks import noise_generator as NG


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(
        np.float32)


@pytest.fixture
def bf16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- numpy references -------------------------------------------------------

def np_conv(x, layer):
    """'same' zero-padded stride-1 cross-correlation with a Conv2D's weights."""
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    kh = kernel.shape[0]
    p = kh // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    _, h, w, _ = x.shape
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(kh):
        for j in range(kh):
            out += xp[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out + bias


def np_up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_pool(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def relu(x):
    return np.maximum(x, 0.0)


def np_up_block(x, block):
    h = np_conv(np_up(relu(x)), block.conv1)
    h = np_conv(relu(h), block.conv2)
    return np_conv(np_up(x), block.shortcut) + block.residual_factor * h


def np_down_block(x, block):
    if block.first:
        h = np_conv(relu(np_conv(x, block.conv1)), block.conv2)
        return (np_conv(np_pool(x), block.shortcut)
                + block.residual_factor * np_pool(h))
    h = np_conv(relu(np_conv(relu(x), block.conv1)), block.conv2)
    if block.downsample:
        return (np_pool(np_conv(x, block.shortcut))
                + block.residual_factor * np_pool(h))
    return x + block.residual_factor * h


def np_dense(x, layer):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return x @ kernel + bias


# --- parameter counts -------------------------------------------------------

def test_nrgan_parameter_counts_at_32px():
    g_x = N.ImageGenerator(resolution=32, width=128)
    d = N.Discriminator(resolution=32, width=128)
    g_n = N.NoiseGenerator(resolution=32, width=128)
    g_n_implicit = N.NoiseGenerator(resolution=32, width=128, implicit=True)
    for net in (g_x, d, g_n, g_n_implicit):
        net.build()
    assert g_x.count_params() == 1_202_691
    assert d.count_params() == 1_053_825
    assert g_n.count_params() == 1_202_691
    assert g_n_implicit.count_params() == 1_464_835


def _expected_counts(resolution, width, z_dim=128, out_channels=3):
    """Counts from the documented channel schedule, by hand."""
    sizes = [4 * 2 ** i for i in range(int(math.log2(resolution / 4)) + 1)]
    ch = {r: max(1, round(width * min(1.0, 32.0 / r))) for r in sizes}
    conv = lambda k, ci, co: k * k * ci * co + co  # noqa: E731
    g = z_dim * 16 * ch[4] + 16 * ch[4]
    for lo, hi in zip(sizes[:-1], sizes[1:]):
        ci, co = ch[lo], ch[hi]
        g += conv(3, ci, co) + conv(3, co, co) + conv(1, ci, co)
    g += conv(3, ch[resolution], out_channels)
    d = 0
    c_in = 3
    for r in reversed([s for s in sizes if s >= 16]):
        co = ch[r]
        if r == resolution:
            d += conv(3, c_in, co) + conv(3, co, co) + conv(1, c_in, co)
        else:
            d += conv(3, c_in, c_in) + conv(3, c_in, co) + conv(1, c_in, co)
        c_in = co
    d += 2 * 2 * conv(3, c_in, c_in) + c_in + 1
    return g, d


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_parameter_counts_follow_schedule(resolution):
    g_x = N.ImageGenerator(resolution=resolution, width=128)
    d = N.Discriminator(resolution=resolution, width=128)
    g_x.build()
    d.build()
    assert (g_x.count_params(), d.count_params()) == _expected_counts(
        resolution, 128)


def test_full_width_128px_counts_and_schedule():
    g_x = N.ImageGenerator(resolution=128)
    d = N.Discriminator(resolution=128)
    g_x.build()
    d.build()
    assert g_x.channels == {4: 128, 8: 128, 16: 128, 32: 128, 64: 64,
                            128: 32}
    assert g_x.count_params() == 1_348_867
    assert d.count_params() == 1_061_377
    assert len(g_x.blocks) == 5 and len(d.blocks) == 6


def test_initialisation_is_xavier_with_gains():
    g_x = N.ImageGenerator(resolution=32, width=128)
    g_x.build()
    block = g_x.blocks[0]
    for layer, gain in ((block.conv1, math.sqrt(2)), (block.shortcut, 1.0),
                        (g_x.head, 1.0), (g_x.stem, 1.0)):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        receptive = np.prod(kernel.shape[:-2]) if kernel.ndim == 4 else 1
        fan_in = receptive * kernel.shape[-2]
        fan_out = receptive * kernel.shape[-1]
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= bound
        assert np.std(kernel) == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert not bias.any()


# --- numpy references of the blocks and networks ---------------------------

def test_up_block_matches_numpy():
    block = N.UpBlock(5)
    x = _normal(2, 4, 4, 3)
    out = np.asarray(block(x))
    np.testing.assert_allclose(out, np_up_block(x.astype(np.float64), block),
                               atol=1e-5)
    assert out.shape == (2, 8, 8, 5)


@pytest.mark.parametrize("first,downsample,c_in,filters", [
    (True, True, 3, 4), (False, True, 4, 6), (False, False, 4, 4)])
def test_down_blocks_match_numpy(first, downsample, c_in, filters):
    block = N.DownBlock(filters, first=first, downsample=downsample)
    x = _normal(2, 8, 8, c_in, seed=1)
    out = np.asarray(block(x))
    np.testing.assert_allclose(
        out, np_down_block(x.astype(np.float64), block), atol=1e-5)
    size = 4 if downsample else 8
    assert out.shape == (2, size, size, filters)


def test_nearest_upsample_and_mean_pool_layers():
    x = _normal(1, 2, 2, 2)
    np.testing.assert_array_equal(np.asarray(L.nearest_upsample()(x)),
                                  np_up(x))
    y = _normal(1, 4, 4, 2)
    np.testing.assert_allclose(np.asarray(L.mean_pool()(y)), np_pool(y),
                               atol=1e-6)


def test_blocks_default_to_nrgan_residual_factor():
    assert L.RESIDUAL_FACTOR == 0.1
    assert all(b.residual_factor == 0.1
               for b in N.Discriminator(resolution=16, width=4).blocks)


@pytest.mark.parametrize("residual_factor", [None, 1.0])
def test_tiny_generator_and_discriminator_match_numpy(residual_factor):
    """residual_factor None: NR-GAN's 0.1; 1.0: --residual_factor=1, as
    the training config builds G_x and D (models.build_*)."""
    if residual_factor is None:
        g = N.ImageGenerator(resolution=8, z_dim=5, width=3)
        d = N.Discriminator(resolution=16, width=4)
    else:
        from bncr_tf import models
        from bncr_tf.training.config import TrainConfig
        config = TrainConfig(variant="gan", resolution=16, width=4, z_dim=5,
                             residual_factor=residual_factor)
        d = models.build_discriminator(config)
        g = N.ImageGenerator(resolution=8, z_dim=5, width=3,
                             residual_factor=residual_factor)
        gx = models.build_generators(config).G_x
        assert [b.residual_factor for b in gx.blocks] == [1.0, 1.0]
        assert [b.residual_factor for b in d.blocks] == [1.0] * 3
    z = _normal(2, 5, seed=2)
    x = np.asarray(g(z))
    h = np_dense(z.astype(np.float64), g.stem).reshape(2, 4, 4, 3)
    h = np_up_block(h, g.blocks[0])
    ref = np.tanh(np_conv(relu(h), g.head))
    np.testing.assert_allclose(x, ref, atol=1e-5)

    y = _normal(3, 16, 16, 3, seed=3)
    logits = np.asarray(d(y))
    h = y.astype(np.float64)
    for block in d.blocks:
        h = np_down_block(h, block)
    ref = np_dense(relu(h).mean(axis=(1, 2)), d.head)[:, 0]
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_highpass_discriminator_matches_numpy():
    """highpass=s: D scores concat(y, s * HP(y)); HP is checked against
    scipy's correlate with zero padding, the rest against the numpy D."""
    import scipy.ndimage
    from bncr_tf.networks import discriminator as disc
    taps = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]) / 4.0
    y = _normal(3, 16, 16, 3, seed=4)
    hp_ref = np.stack([
        np.stack([scipy.ndimage.correlate(y[b, :, :, c].astype(np.float64),
                                          taps, mode="constant")
                  for c in range(3)], axis=-1) for b in range(3)])
    np.testing.assert_allclose(np.asarray(disc.highpass_residual(y)),
                               hp_ref, atol=1e-5)
    flat = np.full((1, 16, 16, 3), 0.3, np.float32)
    np.testing.assert_allclose(
        np.asarray(disc.highpass_residual(flat))[:, 1:-1, 1:-1], 0.0,
        atol=1e-6)

    d = N.Discriminator(resolution=16, width=4, highpass=5.0)
    logits = np.asarray(d(y))
    h = np.concatenate([y.astype(np.float64), 5.0 * hp_ref], axis=-1)
    for block in d.blocks:
        h = np_down_block(h, block)
    ref = np_dense(relu(h).mean(axis=(1, 2)), d.head)[:, 0]
    np.testing.assert_allclose(logits, ref, atol=1e-4)
    # Only the first block's input side grows (3 -> 6 input channels).
    plain = N.Discriminator(resolution=16, width=4)
    plain(y)
    first = [w.shape for w in d.blocks[0].weights]
    assert [w.shape for w in plain.blocks[0].weights] != first
    assert d.count_params() > plain.count_params()
    assert sum(int(np.prod(w.shape)) for b in d.blocks[1:]
               for w in b.weights) == sum(
        int(np.prod(w.shape)) for b in plain.blocks[1:] for w in b.weights)
    clone = N.Discriminator.from_config(d.get_config())
    assert clone.highpass == 5.0
    with pytest.raises(ValueError, match="highpass"):
        N.Discriminator(resolution=16, width=4, highpass=-1.0)


def test_maps_constant_input_gradient_matches_numpy_finite_differences():
    """maps_constant=True (R1 on the image only, --r1_inputs=image) keeps
    the logits and gives the input gradient with D's high-pass map held
    fixed; maps_constant=False gives the full one. Both are checked as
    directional derivatives against central differences of the numpy D
    (float64), with and without the map following the perturbation."""
    import scipy.ndimage
    taps = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]) / 4.0

    def np_hp(y):
        return np.stack([np.stack([
            scipy.ndimage.correlate(y[b, :, :, c], taps, mode="constant")
            for c in range(y.shape[-1])], axis=-1)
            for b in range(y.shape[0])])

    d = N.Discriminator(resolution=16, width=4, highpass=5.0)
    y = _normal(2, 16, 16, 3, seed=6)
    y64 = y.astype(np.float64)
    hp_fixed = np_hp(y64)

    def np_logit_sum(y_img, hp_map):
        h = np.concatenate([y_img, 5.0 * hp_map], axis=-1)
        for block in d.blocks:
            h = np_down_block(h, block)
        return np_dense(relu(h).mean(axis=(1, 2)), d.head)[:, 0].sum()

    grads = {}
    for constant in (False, True):
        yt = tf.constant(y)
        with tf.GradientTape() as tape:
            tape.watch(yt)
            logits = d(yt, maps_constant=constant)
            total = tf.reduce_sum(logits)
        grads[constant] = tape.gradient(total, yt).numpy().astype(np.float64)
        np.testing.assert_allclose(logits.numpy(), np.asarray(d(y)),
                                   atol=1e-6)
    rng = np.random.default_rng(0)
    eps = 1e-4
    for _ in range(3):
        v = rng.standard_normal(y.shape)
        fd_fixed = (np_logit_sum(y64 + eps * v, hp_fixed)
                    - np_logit_sum(y64 - eps * v, hp_fixed)) / (2 * eps)
        fd_full = (np_logit_sum(y64 + eps * v, np_hp(y64 + eps * v))
                   - np_logit_sum(y64 - eps * v, np_hp(y64 - eps * v))
                   ) / (2 * eps)
        np.testing.assert_allclose((grads[True] * v).sum(), fd_fixed,
                                   rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose((grads[False] * v).sum(), fd_full,
                                   rtol=2e-3, atol=1e-3)
    # The high-pass path carries most of the input gradient at s = 5.
    assert (np.linalg.norm(grads[False])
            > 1.5 * np.linalg.norm(grads[True]))
    # Without maps the switch changes nothing.
    plain = N.Discriminator(resolution=16, width=4)
    yt = tf.constant(y)
    for constant in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(yt)
            total = tf.reduce_sum(plain(yt, maps_constant=constant))
        grads[constant] = tape.gradient(total, yt).numpy()
    np.testing.assert_array_equal(grads[False], grads[True])


def test_block_grid_discriminator_matches_numpy():
    """block_grid=s: D scores concat(y, s * G(y)); G (luma jumps on and
    off the 8x8 grid) is checked against loops over pixels, the rest
    against the numpy D; a JPEG-like step at a block boundary lands in the
    boundary map only."""
    from bncr_tf.networks import discriminator as disc
    y = _normal(2, 16, 16, 3, seed=5)
    lum = y.astype(np.float64).mean(axis=-1)
    ref = np.zeros((2, 16, 16, 4))
    for b in range(2):
        for i in range(16):
            for j in range(16):
                if j < 15:
                    jump = abs(lum[b, i, j + 1] - lum[b, i, j])
                    ref[b, i, j, 0 if j % 8 == 7 else 1] = jump
                if i < 15:
                    jump = abs(lum[b, i + 1, j] - lum[b, i, j])
                    ref[b, i, j, 2 if i % 8 == 7 else 3] = jump
    np.testing.assert_allclose(np.asarray(disc.block_grid_differences(y)),
                               ref, atol=1e-6)
    # Two flat 8x8 blocks side by side: one jump, on boundary column 7.
    step = np.zeros((1, 16, 16, 3), np.float32)
    step[:, :, 8:] = 0.5
    g = np.asarray(disc.block_grid_differences(step))
    np.testing.assert_allclose(g[0, :, 7, 0], 0.5, atol=1e-6)
    assert np.abs(g[..., 1:]).max() == 0.0
    assert np.abs(np.delete(g[..., 0], 7, axis=2)).max() == 0.0

    d = N.Discriminator(resolution=16, width=4, block_grid=3.0)
    logits = np.asarray(d(y))
    h = np.concatenate([y.astype(np.float64), 3.0 * ref], axis=-1)
    for block in d.blocks:
        h = np_down_block(h, block)
    expect = np_dense(relu(h).mean(axis=(1, 2)), d.head)[:, 0]
    np.testing.assert_allclose(logits, expect, atol=1e-4)
    both = N.Discriminator(resolution=16, width=4, highpass=2.0,
                           block_grid=3.0)
    assert both.input_channels == 3 + 3 + 4
    clone = N.Discriminator.from_config(d.get_config())
    assert clone.block_grid == 3.0 and clone.highpass == 0.0
    with pytest.raises(ValueError, match="block_grid"):
        N.Discriminator(resolution=16, width=4, block_grid=-1.0)


# --- shapes, dtypes, ranges -------------------------------------------------

@pytest.mark.parametrize("resolution,width,kernel_size", [
    (32, 16, 7), (128, 8, 11)])
def test_shapes_dtypes_ranges(resolution, width, kernel_size):
    b = 3
    z = _normal(b, 128)
    g_x = N.ImageGenerator(resolution=resolution, width=width)
    x = g_x(z)
    assert x.shape == (b, resolution, resolution, 3)
    assert x.dtype == tf.float32
    assert np.all(np.abs(x) <= 1.0)

    d = N.Discriminator(resolution=resolution, width=width)
    logits = d(x)
    assert logits.shape == (b,) and logits.dtype == tf.float32

    for prior in ("additive_gaussian", "camera"):
        g_n = N.NoiseGenerator(resolution=resolution, width=width,
                               prior=prior)
        maps = g_n(z)
        for value in maps.values():
            assert value.shape == (b, resolution, resolution, 3)
            assert value.dtype == tf.float32
        if prior == "camera":
            assert np.all(np.asarray(maps["read"]) > 0)
            assert np.all(np.asarray(maps["shot"]) > 0)
        else:
            assert np.all(np.abs(maps["s"]) <= 1.0)

    g_k = N.KernelGenerator(kernel_size=kernel_size)
    out = g_k(z)
    for key in ("k", "k_hat", "m_k"):
        assert out[key].shape == (b, kernel_size, kernel_size)
        assert out[key].dtype == tf.float32
    np.testing.assert_allclose(np.sum(out["k"], axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.sum(out["k_hat"], axis=(1, 2)), 1.0,
                               atol=1e-5)
    assert np.all(np.asarray(out["k"]) >= 0)
    m_k = np.asarray(out["m_k"])
    assert np.all((m_k >= 0) & (m_k <= 1))


def test_quality_generator_ranges_and_no_mask():
    z = _normal(64, 128, seed=4) * 10.0  # large latents push the sigmoids
    out = N.QualityGenerator()(z)
    q, m_q = np.asarray(out["q"]), np.asarray(out["m_q"])
    assert q.shape == (64,) and m_q.shape == (64,)
    assert out["q"].dtype == tf.float32 and out["m_q"].dtype == tf.float32
    assert np.all((q >= 0) & (q <= 100)) and np.all((m_q >= 0) & (m_q <= 1))
    assert q.std() > 0 and m_q.std() > 0

    out = N.QualityGenerator(use_mask=False)(z)
    np.testing.assert_array_equal(np.asarray(out["m_q"]), 1.0)


def test_quality_generator_initial_values():
    g_q = N.QualityGenerator()
    g_q.build()
    # Zero latent: hidden layers give 0, so the head bias sets the output.
    out = g_q(np.zeros((2, 128), np.float32))
    np.testing.assert_allclose(np.asarray(out["q"]), 90.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["m_q"]),
                               1 / (1 + math.exp(2.0)), rtol=1e-5)


def test_quality_generator_q_min_removes_the_dead_zone():
    """q = q_min + (100 - q_min) sigmoid: q_init is still the zero-latent
    value and q never falls below q_min. Below q = 2 every table entry is
    clipped at 255 (and psi^g clamps q below 1), so a quality there gets no
    gradient at all (issue 14); at q_min = 20 it does."""
    g_q = N.QualityGenerator(q_min=20.0)
    out = g_q(np.zeros((2, 128), np.float32))
    np.testing.assert_allclose(np.asarray(out["q"]), 90.0, rtol=1e-5)
    g_q.head.bias.assign([-30.0, 0.0])  # saturate the quality logit low
    out = g_q(_normal(8, 128, seed=3))
    assert np.all(np.asarray(out["q"]) >= 20.0)
    x = tf.random.stateless_uniform([1, 16, 16, 3], [4, 0])
    w = tf.random.stateless_normal([1, 16, 16, 3], [5, 0])
    grads = []
    for q0 in (0.5, 20.5):
        q = tf.constant([q0])
        with tf.GradientTape() as tape:
            tape.watch(q)
            loss = tf.reduce_sum(w * jpeg.diff_jpeg(x, q))
        grads.append(float(tape.gradient(loss, q)[0]))
    assert grads[0] == 0.0   # the dead zone that q_min = 0 allows
    assert grads[1] != 0.0
    with pytest.raises(ValueError, match="q_init"):
        N.QualityGenerator(q_min=95.0, q_init=90.0)


def test_kernel_generator_initial_mask_and_no_mask():
    z = _normal(16, 128, seed=5)
    out = N.KernelGenerator(kernel_size=7)(np.zeros((2, 128), np.float32))
    np.testing.assert_allclose(np.asarray(out["m_k"]),
                               1 / (1 + math.exp(2.0)), rtol=1e-5)
    out = N.KernelGenerator(kernel_size=7, use_mask=False)(z)
    np.testing.assert_array_equal(np.asarray(out["k"]),
                                  np.asarray(out["k_hat"]))
    np.testing.assert_array_equal(np.asarray(out["m_k"]), 1.0)


def _centre_reference(k):
    """numpy: move every tap's mass by -centroid, split bilinearly."""
    size = k.shape[0]
    pos = np.arange(size) - size // 2
    dy = (k.sum(1) * pos).sum()
    dx = (k.sum(0) * pos).sum()
    out = np.zeros_like(k)
    for i in range(size):
        for j in range(size):
            y, x = i - dy, j - dx
            for yy in (int(np.floor(y)), int(np.floor(y)) + 1):
                for xx in (int(np.floor(x)), int(np.floor(x)) + 1):
                    if 0 <= yy < size and 0 <= xx < size:
                        w = max(0, 1 - abs(yy - y)) * max(0, 1 - abs(xx - x))
                        out[yy, xx] += k[i, j] * w
    return out / out.sum()


def test_centre_kernel_against_numpy_and_cases():
    from bncr_tf.networks.kernel_generator import centre_kernel
    from bncr_tf.degradations import kernels as K
    rng = np.random.default_rng(3)
    # Mass near the centre (so none leaves the window) and off-centre.
    small = np.zeros((7, 7))
    small[2:5, 3:6] = rng.uniform(size=(3, 3))
    small /= small.sum()
    wide = rng.uniform(size=(7, 7)) ** 4
    wide /= wide.sum()
    shifted = np.zeros((7, 7))
    shifted[0, 6] = 1.0
    disk = np.asarray(K.disk_kernel(1.3, 7), np.float64)
    batch = np.stack([small, wide, shifted, disk])
    got = np.asarray(centre_kernel(batch))
    for b in range(4):
        np.testing.assert_allclose(got[b], _centre_reference(batch[b]),
                                   atol=1e-12)
    pos = np.arange(7) - 3
    # No mass left the window: the centroid is exactly the centre.
    assert abs((got[0].sum(1) * pos).sum()) < 1e-12
    assert abs((got[0].sum(0) * pos).sum()) < 1e-12
    ident = np.zeros((7, 7))
    ident[3, 3] = 1.0
    np.testing.assert_allclose(got[2], ident, atol=1e-12)  # delta -> k_I
    np.testing.assert_allclose(got[3], disk, atol=1e-12)   # centred: kept
    # Differentiable, and in the generator.
    kt = tf.constant(batch, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(kt)
        loss = tf.reduce_sum(centre_kernel(kt)
                             * tf.constant(wide[None], tf.float32))
    assert np.all(np.isfinite(tape.gradient(loss, kt).numpy()))
    out = N.KernelGenerator(kernel_size=7, centre=True)(
        _normal(8, 128, seed=2))
    k = np.asarray(out["k"], np.float64)
    # (near-uniform k_hat at init: a little mass leaves the window)
    assert np.abs((k.sum(2) * pos).sum(1)).max() < 0.05


def test_compose_kernel_identity_sum_and_reference():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((4, 7, 7))
    k_hat = np.exp(logits) / np.exp(logits).sum(axis=(1, 2), keepdims=True)
    k_id = np.zeros((7, 7))
    k_id[3, 3] = 1.0
    k = np.asarray(N.compose_kernel(k_hat, np.zeros((4, 7, 7))))
    np.testing.assert_array_equal(k, np.broadcast_to(k_id, (4, 7, 7)))

    m = rng.uniform(size=(4, 7, 7))
    k = np.asarray(N.compose_kernel(k_hat, m))
    ref = m * k_hat + (1 - m) * k_id
    ref /= ref.sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(k, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
    k = np.asarray(N.compose_kernel(k_hat, np.ones((4, 7, 7))))
    np.testing.assert_allclose(k, k_hat, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(N.identity_kernel(5))[2, 2], 1)
    assert np.asarray(N.identity_kernel(5)).sum() == 1


# --- serialisation ------------------------------------------------------------

def _round_trip(net, *inputs):
    out = net(*inputs)
    clone = type(net).from_config(net.get_config())
    clone.build()
    clone.set_weights(net.get_weights())
    out2 = clone(*inputs)
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a),
                                                   np.asarray(b)), out, out2)
    return clone


def test_get_config_round_trip():
    z = _normal(2, 128)
    _round_trip(N.ImageGenerator(resolution=16, width=8,
                                 channel_multipliers=(1, 0.5, 0.25)), z)
    _round_trip(N.Discriminator(resolution=32, width=8),
                _normal(2, 32, 32, 3))
    clone = _round_trip(N.NoiseGenerator(resolution=16, width=8,
                                         prior="camera", implicit=True),
                        z, _normal(2, 128, seed=1))
    assert clone.prior == "camera" and clone.implicit
    _round_trip(N.KernelGenerator(kernel_size=5, hidden=16, use_mask=False),
                z)
    _round_trip(N.QualityGenerator(hidden=16, q_init=80.0), z)


def test_keras_file_round_trip(tmp_path):
    net = N.NoiseGenerator(resolution=8, width=4, prior="camera")
    z = _normal(2, 128)
    out = net(z)
    path = str(tmp_path / "g_n.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    out2 = loaded(z)
    np.testing.assert_array_equal(np.asarray(out["read"]),
                                  np.asarray(out2["read"]))


# --- mixed precision --------------------------------------------------------

def test_mixed_bfloat16_policy(bf16_policy):
    z = _normal(2, 128)
    nets = [N.ImageGenerator(resolution=16, width=8),
            N.Discriminator(resolution=16, width=8),
            N.NoiseGenerator(resolution=16, width=8, prior="camera",
                             implicit=True),
            N.KernelGenerator(kernel_size=7, hidden=16),
            N.QualityGenerator(hidden=16),
            N.Discriminator(resolution=16, width=8, highpass=20.0)]
    outputs = [nets[0](z), nets[1](_normal(2, 16, 16, 3)), nets[2](z, z),
               nets[3](z), nets[4](z), nets[5](_normal(2, 16, 16, 3))]
    for net, out in zip(nets, outputs):
        assert net.dtype_policy.name == "mixed_bfloat16"
        assert all(v.dtype == "float32" for v in net.weights)
        for value in tf.nest.flatten(out):
            assert value.dtype == tf.float32
            assert np.all(np.isfinite(np.asarray(value)))
    # The policy reaches the inner layers.
    assert nets[0].blocks[0].conv1.compute_dtype == "bfloat16"
    assert nets[1].blocks[0].conv1.compute_dtype == "bfloat16"
    np.testing.assert_allclose(np.sum(outputs[3]["k"], axis=(1, 2)), 1.0,
                               atol=1e-5)


def test_explicit_mixed_dtype_argument():
    g_x = N.ImageGenerator(resolution=8, width=4, dtype="mixed_bfloat16")
    x = g_x(_normal(2, 128))
    assert x.dtype == tf.float32
    assert g_x.blocks[0].conv2.compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


# --- G_n: implicit latent, priors, transforms --------------------------------

def test_implicit_latent_overwrite_equals_concatenation():
    g_n = N.NoiseGenerator(resolution=8, width=4, implicit=True)
    z_x, z_n = _normal(3, 128, seed=7), _normal(3, 128, seed=8)
    long_z = np.concatenate([_normal(3, 128, seed=9), z_n], axis=1)
    a = np.asarray(g_n(z_n, z_x)["s"])
    b = np.asarray(g_n(long_z, z_x)["s"])
    np.testing.assert_array_equal(a, b)
    c = np.asarray(g_n(z_n, _normal(3, 128, seed=10))["s"])
    assert np.abs(a - c).max() > 1e-4
    with pytest.raises(ValueError):
        g_n(z_n)


def test_priors_match_formulas():
    s = _normal(2, 4, 4, 3, seed=11) * 0.2
    x = np.tanh(_normal(2, 4, 4, 3, seed=12))
    eps = _normal(2, 4, 4, 3, seed=13)
    x01 = (x + 1) / 2
    np.testing.assert_allclose(N.additive_gaussian(s, eps), eps * s,
                               rtol=1e-6)
    np.testing.assert_allclose(N.multiplicative_gaussian(s, x, eps),
                               eps * s * x01 * 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(N.poisson(s, x, eps),
                               eps * s * np.sqrt(x01) * 2, rtol=1e-5,
                               atol=1e-7)
    read = np.full_like(s, 1e-4)
    shot = np.full_like(s, 1e-2)
    n01 = np.asarray(N.camera(read, shot, x01, eps))
    np.testing.assert_allclose(n01, eps * np.sqrt(1e-4 + 1e-2 * x01),
                               rtol=1e-5)
    maps = {"read": read, "shot": shot}
    np.testing.assert_allclose(N.apply_prior("camera", maps, x, eps),
                               2 * n01, rtol=1e-6)
    np.testing.assert_allclose(N.apply_prior("none", {"s": s}), s)
    # Stateless: same seed, same noise; eps ~ N(0, 1).
    seed = tf.constant([1, 2])
    a = N.additive_gaussian(np.ones((64, 8, 8, 3), np.float32), seed=seed)
    b = N.additive_gaussian(np.ones((64, 8, 8, 3), np.float32), seed=seed)
    np.testing.assert_array_equal(a, b)
    assert abs(float(np.std(a)) - 1.0) < 0.05


@pytest.mark.parametrize("prior", ["multiplicative_gaussian", "poisson",
                                   "camera"])
def test_signal_dependent_priors_detach_x(prior):
    x = tf.Variable(np.tanh(_normal(2, 4, 4, 3, seed=14)))
    s = tf.Variable(_normal(2, 4, 4, 3, seed=15))
    eps = _normal(2, 4, 4, 3, seed=16)
    with tf.GradientTape(persistent=True) as tape:
        if prior == "camera":
            maps = {"read": tf.exp(s - 8.0), "shot": tf.exp(s - 5.0)}
        else:
            maps = {"s": s}
        n = N.apply_prior(prior, maps, x, eps)
        total = tf.reduce_sum(n * n)
    grad_x = tape.gradient(total, x)
    assert grad_x is None or not np.any(np.asarray(grad_x))
    grad_s = tape.gradient(total, s)
    assert grad_s is not None and np.any(np.asarray(grad_s))


def test_camera_prior_initial_levels_inside_brooks_ranges():
    keras.utils.set_random_seed(0)
    g_n = N.NoiseGenerator(resolution=32, width=32, prior="camera")
    maps = g_n(_normal(8, 128, seed=17))
    log_read = np.log(np.asarray(maps["read"], np.float64))
    log_shot = np.log(np.asarray(maps["shot"], np.float64))
    lo_shot, hi_shot = math.log(1e-4), math.log(1.2e-2)
    assert lo_shot < np.median(log_shot) < hi_shot
    assert np.mean((log_shot > lo_shot) & (log_shot < hi_shot)) > 0.75
    lo_read = 1.2 + 2.18 * lo_shot - 3 * 0.26
    hi_read = 1.2 + 2.18 * hi_shot + 3 * 0.26
    assert lo_read < np.median(log_read) < hi_read
    assert np.mean((log_read > lo_read) & (log_read < hi_read)) > 0.75
    # Raw output 0 gives exactly the documented centre.
    lb = NG.camera_log_variance(tf.zeros([1]), NG.CAMERA_SHOT_RANGE,
                                NG.CAMERA_SHOT_INIT)
    assert math.exp(float(lb[0])) == pytest.approx(1.0954e-3, rel=1e-3)
    la = NG.camera_log_variance(tf.zeros([1]), NG.CAMERA_READ_RANGE,
                                NG.CAMERA_READ_INIT)
    assert math.exp(float(la[0])) == pytest.approx(
        math.exp(1.2) * 1.0954e-3 ** 2.18, rel=1e-3)
    # Saturated raw outputs stay inside the ranges.
    lb = NG.camera_log_variance(tf.constant([-50.0, 50.0]),
                                NG.CAMERA_SHOT_RANGE, NG.CAMERA_SHOT_INIT)
    np.testing.assert_allclose(np.exp(np.asarray(lb)), [1e-6, 1e-1],
                               rtol=1e-4)


def test_random_noise_transforms_deterministic_and_value_preserving():
    n = _normal(6, 5, 5, 3, seed=18)
    seed = tf.constant([3, 4], tf.int32)
    kwargs = dict(rotation=True, channel_shuffle=True, sign_flip=True)
    a = np.asarray(N.random_noise_transforms(n, seed, **kwargs))
    b = np.asarray(N.random_noise_transforms(n, seed, **kwargs))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(tf.function(N.random_noise_transforms)(n, seed, **kwargs))
    np.testing.assert_array_equal(a, c)
    d = np.asarray(N.random_noise_transforms(n, tf.constant([5, 6]),
                                             **kwargs))
    assert np.abs(a - d).max() > 0
    # Per sample, the multiset of |values| is preserved (signs may flip).
    for i in range(6):
        np.testing.assert_array_equal(np.sort(np.abs(a[i]).ravel()),
                                      np.sort(np.abs(n[i]).ravel()))
    # Without sign flips the multiset of values itself is preserved.
    e = np.asarray(N.random_noise_transforms(n, seed, rotation=True,
                                             channel_shuffle=True))
    for i in range(6):
        np.testing.assert_array_equal(np.sort(e[i].ravel()),
                                      np.sort(n[i].ravel()))
    np.testing.assert_array_equal(
        np.asarray(N.random_noise_transforms(n, seed)), n)


def test_random_noise_transforms_are_the_documented_group():
    n = _normal(32, 4, 4, 3, seed=19)
    seed = tf.constant([7, 8])
    rot = np.asarray(N.random_noise_transforms(n, seed, rotation=True))
    ks = []
    for i in range(32):
        match = [k for k in range(4)
                 if np.array_equal(rot[i], np.rot90(n[i], k, axes=(0, 1)))]
        assert match, f"sample {i} is not a k * 90 degree rotation"
        ks.append(match[0])
    assert len(set(ks)) == 4
    shuf = np.asarray(N.random_noise_transforms(n, seed,
                                                channel_shuffle=True))
    perms = set()
    for i in range(32):
        perm = [next(c for c in range(3) if np.array_equal(shuf[i, ..., j],
                                                           n[i, ..., c]))
                for j in range(3)]
        assert sorted(perm) == [0, 1, 2]
        perms.add(tuple(perm))
    assert len(perms) > 1
    flip = np.asarray(N.random_noise_transforms(n, seed, sign_flip=True))
    signs = flip[:, 0, 0, :] / n[:, 0, 0, :]
    np.testing.assert_allclose(flip, n * signs[:, None, None, :], rtol=1e-6)
    np.testing.assert_allclose(np.abs(signs), 1.0, rtol=1e-6)
    assert 0.2 < np.mean(signs < 0) < 0.8
    # Independent per (sample, channel): some samples have mixed signs.
    assert np.any(np.ptp(signs, axis=1) > 0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        N.ImageGenerator(resolution=48)
    with pytest.raises(ValueError):
        N.Discriminator(resolution=8)
    with pytest.raises(ValueError):
        N.ImageGenerator(resolution=32, channel_multipliers=(1, 1))
    with pytest.raises(ValueError):
        N.NoiseGenerator(prior="gamma")
    with pytest.raises(ValueError):
        N.KernelGenerator(kernel_size=6)
    with pytest.raises(ValueError):
        N.random_noise_transforms(np.zeros((1, 4, 6, 3), np.float32),
                                  tf.constant([0, 0]), rotation=True)
