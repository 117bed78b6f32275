"""Tests for bncr_tf.degradations.settings (settings table and sampling)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from bncr_tf import synthesis
from bncr_tf import variants
from bncr_tf.degradations import settings as S

EXPL_CHOICES = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003)  # spec 2.1
CIFAR = "ABCDEFGHIJKLMNOPQ"


def _stream(seed, setting_id, stage_id, index):
    """Independent restatement of the documented per-image stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, setting_id, stage_id, index])))


def _pillbox(radius, size, sub=96):
    """Disk kernel by supersampling each pixel (independent reference)."""
    half = size // 2
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    k = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            yy = (i - half) + offs[:, None]
            xx = (j - half) + offs[None, :]
            k[i, j] = np.mean(xx ** 2 + yy ** 2 <= radius ** 2)
    return k / k.sum()


def _centroid(kernels):
    size = kernels.shape[-1]
    grid = np.arange(size)
    rows = (kernels.sum(-1) * grid).sum(-1)
    cols = (kernels.sum(-2) * grid).sum(-1)
    return rows, cols


# --- the table --------------------------------------------------------------


def test_every_setting_resolves_and_ids_unique():
    names = list(CIFAR) + ["noise", "ffhq_D", "ffhq_J", "ffhq_P"]
    for name in names:
        s = S.get_setting(name)
        assert s.name == name and s.description
        assert S.get_setting(s) is s
    assert set(S.SETTINGS) == set(names)
    ids = [s.setting_id for s in S.SETTINGS.values()]
    assert len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="ffhq_P"):
        S.get_setting("Z")
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.SETTINGS["A"].blur_rate = 1.0


def test_table_matches_paper():
    g = S.SETTINGS
    assert g["A"].is_clean
    assert (g["B"].blur, g["B"].disk_radius, g["B"].blur_rate) == (
        "disk", (0.5, 2.0), 1.0)
    assert (g["C"].blur, g["C"].motion_length, g["C"].motion_exposures) == (
        "motion", 5.0, (0.1, 0.5, 1.0))
    assert (g["D"].blur, g["D"].p_disk, g["D"].blur_rate) == ("mixed", 0.5,
                                                              1.0)
    for name, rate in zip("EFG", (0.25, 0.5, 0.75)):
        s = g[name]
        assert (s.blur, s.p_disk, s.blur_rate) == ("mixed", 0.5, rate)
        assert s.noise_rate == 0 and s.jpeg_rate == 0
    for name, q in zip("HIJ", ((60, 80), (80, 100), (60, 100))):
        assert (g[name].jpeg_quality, g[name].jpeg_rate) == (q, 1.0)
        assert g[name].blur is None and not g[name].noise
    for name, rate in zip("KLM", (0.25, 0.5, 0.75)):
        assert (g[name].jpeg_quality, g[name].jpeg_rate) == ((60, 100), rate)
        assert g[name].blur is None and not g[name].noise
    for name, rate in zip("NOPQ", (1.0, 0.25, 0.5, 0.75)):
        s = g[name]
        assert (s.blur, s.noise, s.jpeg_quality) == ("mixed", True, (60, 100))
        assert s.blur_rate == s.noise_rate == s.jpeg_rate == rate
    assert g["noise"].noise and g["noise"].noise_rate == 1.0
    assert g["noise"].blur is None and g["noise"].jpeg_quality is None
    for name in CIFAR:
        assert g[name].kernel_size == 7 and g[name].resolution == 32
    assert g["noise"].kernel_size == 7
    for name, base in (("ffhq_D", "D"), ("ffhq_J", "J"), ("ffhq_P", "P")):
        s, b = g[name], g[base]
        assert s.kernel_size == 11 and s.resolution == 128
        assert s.disk_radius == (0.5, 4.0) and s.motion_length == 10.0
        assert (s.blur, s.p_disk, s.noise, s.jpeg_quality) == (
            b.blur, b.p_disk, b.noise, b.jpeg_quality)
        assert (s.blur_rate, s.noise_rate, s.jpeg_rate) == (
            b.blur_rate, b.noise_rate, b.jpeg_rate)


# --- data-side sampling -----------------------------------------------------


def test_setting_j_quality_integer_uniform():
    n = 600
    p = S.sample_params("J", np.arange(n), n, 3, (16, 16))
    q = p.jpeg_quality
    assert q.dtype == np.int64 and np.all(q >= 60) and np.all(q <= 100)
    assert q.min() <= 61 and q.max() >= 99
    counts = np.bincount(q - 60, minlength=41)
    assert stats.chisquare(counts).pvalue > 1e-3
    # Documented stream: integers(lo, hi + 1) on [seed, id, 6, i].
    sid = S.SETTINGS["J"].setting_id
    want = [_stream(3, sid, 6, i).integers(60, 101) for i in range(20)]
    np.testing.assert_array_equal(q[:20], want)
    assert not p.noise_applied.any() and np.all(p.blur_type == 0)


@pytest.mark.parametrize("name,rate", [("O", 0.25), ("P", 0.5), ("Q", 0.75)])
def test_partial_all_exact_and_independent(name, rate):
    n = 401
    p = S.sample_params(name, np.arange(n), n, 0, (8, 8))
    masks = [p.blur_type > 0, p.noise_applied, p.jpeg_quality > 0]
    k = int(np.floor(rate * n + 0.5))
    for m in masks:
        assert m.sum() == k
    # Independent exact subsets: pairwise overlap is hypergeometric with
    # mean k^2 / n; allow 5 standard deviations.
    mean = k * k / n
    sd = np.sqrt(k * (k / n) * (1 - k / n) * (n - k) / (n - 1))
    for a in range(3):
        for b in range(a + 1, 3):
            overlap = np.sum(masks[a] & masks[b])
            assert abs(overlap - mean) < 5 * sd, (a, b, overlap, mean)
    triple = np.sum(masks[0] & masks[1] & masks[2])
    assert abs(triple - k ** 3 / n ** 2) < 0.1 * n


def test_partial_blur_and_jpeg_only_settings():
    n = 200
    for name, rate in zip("EFGKLM", (0.25, 0.5, 0.75) * 2):
        p = S.sample_params(name, np.arange(n), n, 1, (8, 8))
        blurred, jpeg = (p.blur_type > 0).sum(), (p.jpeg_quality > 0).sum()
        want = int(np.floor(rate * n + 0.5))
        if name in "EFG":
            assert (blurred, jpeg) == (want, 0)
        else:
            assert (blurred, jpeg) == (0, want)
        assert not p.noise_applied.any()
        ident = np.zeros((7, 7), np.float32)
        ident[3, 3] = 1
        unblurred = p.kernel[p.blur_type == 0]
        np.testing.assert_array_equal(
            unblurred, np.broadcast_to(ident, unblurred.shape))


def test_setting_b_disk_kernels():
    n = 60
    p = S.sample_params("B", np.arange(n), n, 0, (8, 8))
    assert np.all(p.blur_type == 1)
    r = p.blur_radius
    assert np.all((r >= 0.5) & (r <= 2.0))
    assert stats.kstest((r - 0.5) / 1.5, "uniform").pvalue > 1e-3
    assert np.all(p.motion_length == 0)
    for j in range(0, n, 6):
        np.testing.assert_allclose(p.kernel[j], _pillbox(float(r[j]), 7),
                                   atol=2e-3)
    # Radius from the documented stream: uniform(0.5, 2) on [seed, id, 2, i].
    sid = S.SETTINGS["B"].setting_id
    np.testing.assert_allclose(
        r[:10], [_stream(0, sid, 2, i).uniform(0.5, 2.0) for i in range(10)],
        rtol=1e-6)


def test_setting_c_motion_kernels():
    n = 90
    p = S.sample_params("C", np.arange(n), n, 0, (8, 8))
    assert np.all(p.blur_type == 2) and np.all(p.motion_length == 5.0)
    exposure = p.motion_exposure.astype(np.float64)
    assert set(np.round(exposure, 3).tolist()) == {0.1, 0.5, 1.0}
    assert set(np.round(p.motion_expl.astype(np.float64), 4).tolist()) <= set(
        EXPL_CHOICES)
    k = p.kernel.astype(np.float64)
    assert np.all(k >= 0)
    np.testing.assert_allclose(k.sum((1, 2)), 1.0, atol=1e-5)
    rows, cols = _centroid(k)
    np.testing.assert_allclose(rows, 3.0, atol=1e-3)
    np.testing.assert_allclose(cols, 3.0, atol=1e-3)
    ent = -np.sum(np.where(k > 0, k * np.log(np.where(k > 0, k, 1)), 0),
                  axis=(1, 2))
    t01 = np.isclose(p.motion_exposure, 0.1)
    t1 = np.isclose(p.motion_exposure, 1.0)
    # Spec section 6: L = 5, T = 0.1 -> H <= 0.71; T = 1 -> mean 1.92.
    assert ent[t01].max() < 0.8
    assert 1.6 < ent[t1].mean() < 2.2
    # A motion kernel is not symmetric like a disk (spot check).
    assert np.abs(k - k[:, ::-1, ::-1]).max(axis=(1, 2)).mean() > 1e-3


def test_setting_d_mix_and_ffhq_kernel_size():
    n = 300
    p = S.sample_params("D", np.arange(n), n, 0, (8, 8))
    frac = np.mean(p.blur_type == 1)
    assert np.all(p.blur_type > 0)
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / n)
    sid = S.SETTINGS["D"].setting_id
    want = [1 if _stream(0, sid, 1, i).random() < 0.5 else 2
            for i in range(n)]
    np.testing.assert_array_equal(p.blur_type, want)
    for name in ("ffhq_D", "ffhq_J", "ffhq_P"):
        q = S.sample_params(name, np.arange(20), 20, 0, (16, 16))
        assert q.kernel.shape == (20, 11, 11)
    q = S.sample_params("ffhq_D", np.arange(40), 40, 0, (16, 16))
    assert q.blur_radius.max() > 2.0 and q.blur_radius.max() <= 4.0
    assert np.all(q.motion_length[q.blur_type == 2] == 10.0)


def test_noise_stream_reproducible_from_seed_setting_index():
    n = 30
    p = S.sample_params("N", np.arange(n), n, 5, (8, 8))
    sid = S.SETTINGS["N"].setting_id
    for i in (0, 7, 29):
        rng = _stream(5, sid, 4, i)
        log_shot = rng.uniform(np.log(1e-4), np.log(1.2e-2))
        log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
        eps = rng.standard_normal((8, 8, 3), dtype=np.float32)
        assert p.noise_shot[i] == pytest.approx(np.exp(log_shot), rel=1e-6)
        assert p.noise_read[i] == pytest.approx(np.exp(log_read), rel=1e-6)
        np.testing.assert_array_equal(p.noise_eps[i], eps)


def test_params_independent_of_index_batching():
    n = 120
    full = S.sample_params("P", np.arange(n), n, 9, (8, 8))
    pick = np.array([117, 3, 64, 64, 0, 90])
    part = S.sample_params("P", pick, n, 9, (8, 8))
    for f in dataclasses.fields(S.DegradationParams):
        a, b = getattr(full, f.name), getattr(part, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a[pick], b, err_msg=f.name)
    other = S.sample_params("P", np.arange(n), n, 10, (8, 8))
    assert not np.array_equal(other.noise_applied, full.noise_applied)


def test_apply_params_clean_identity_and_batch_independence():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    pa = S.sample_params("A", np.arange(40), 40, 0, (16, 16))
    np.testing.assert_array_equal(S.apply_params(clean, pa), clean)
    p = S.sample_params("P", np.arange(40), 40, 0, (16, 16))
    whole = S.apply_params(clean, p)
    assert whole.dtype == np.uint8 and whole.shape == clean.shape
    for start, stop in ((0, 1), (5, 17), (17, 40)):
        sub = S.sample_params("P", np.arange(start, stop), 40, 0, (16, 16))
        np.testing.assert_array_equal(
            S.apply_params(clean[start:stop], sub), whole[start:stop])
    untouched = ((p.blur_type == 0) & ~p.noise_applied
                 & (p.jpeg_quality == 0))
    assert untouched.any()
    np.testing.assert_array_equal(whole[untouched], clean[untouched])
    assert np.any(whole[~untouched] != clean[~untouched])


# --- generator side ---------------------------------------------------------


def test_kernel_bank():
    bank = S.kernel_bank("D", n=64, seed=0)
    assert bank.shape == (64, 7, 7) and bank.dtype == np.float32
    np.testing.assert_allclose(bank.sum((1, 2)), 1.0, atol=1e-5)
    symmetric = np.abs(bank - bank[:, ::-1, ::-1]).max((1, 2)) < 1e-6
    assert 10 < symmetric.sum() < 54  # disks and motion kernels mixed
    assert S.kernel_bank("ffhq_D", n=4, seed=0).shape == (4, 11, 11)
    ident = S.kernel_bank("J", n=3)
    assert ident.shape == (3, 7, 7) and np.all(ident[:, 3, 3] == 1)
    np.testing.assert_array_equal(S.kernel_bank("D", n=8, seed=0), bank[:8])


def test_sample_degradation_tf():
    bank = S.kernel_bank("P", n=32, seed=1)
    fn = tf.function(lambda seed: S.sample_degradation_tf("P", 2000, seed,
                                                          bank))
    d = fn(tf.constant([1, 2], tf.int64))
    d2 = fn(tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(d.kernels.numpy(), d2.kernels.numpy())
    assert d.kernels.shape == (2000, 7, 7)
    for m in (d.blur_mask, d.noise_mask, d.jpeg_mask):
        m = m.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert abs(m.mean() - 0.5) < 0.05
    assert abs(np.corrcoef(d.blur_mask.numpy(), d.jpeg_mask.numpy())[0, 1]
               ) < 0.1
    k = d.kernels.numpy()
    off = d.blur_mask.numpy() == 0
    assert np.all(k[off, 3, 3] == 1.0)
    assert np.all([np.any(np.all(np.isclose(kk, bank), axis=(1, 2)))
                   for kk in k[~off][:50]])
    q = d.quality.numpy()
    assert np.all(q == np.round(q)) and q.min() == 60 and q.max() == 100
    shot = d.shot.numpy()
    assert shot.min() >= 1e-4 * 0.999 and shot.max() <= 1.2e-2 * 1.001
    full = S.sample_degradation_tf("N", 16, tf.constant([0, 0]),
                                   S.kernel_bank("N", n=8))
    assert np.all(full.blur_mask.numpy() == 1)
    assert np.all(full.jpeg_mask.numpy() == 1)


def _true_stages(setting, bank):
    """AmbientGAN's TRUE stages of a setting: the one synthesis path
    (`synthesis.degrade`) with the true degradation sampled from `bank`."""
    setting = S.get_setting(setting)
    v = variants.get_variant("ambientgan").for_setting(
        None if setting.is_clean else setting)
    return synthesis.Generators(G_x=None, variant=v, ambient=(setting, bank))


def test_true_degradation_differentiable():
    bank = S.kernel_bank("P", n=8, seed=0)
    gens = _true_stages("N", bank)
    x = tf.Variable(np.random.default_rng(0).uniform(
        0.1, 0.9, (4, 16, 16, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = synthesis.degrade(gens, 2.0 * x - 1.0, {},
                              tf.constant([5, 6])).y
        loss = tf.reduce_sum(y)
    g = tape.gradient(loss, x).numpy()
    assert y.shape == x.shape
    assert float(tf.reduce_min(y)) >= -1.0 and float(tf.reduce_max(y)) <= 1.0
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
    clean = _true_stages("A", S.kernel_bank("A", n=2))
    x11 = 2.0 * x - 1.0
    y0 = synthesis.degrade(clean, x11, {}, tf.constant([5, 6])).y
    np.testing.assert_array_equal(y0.numpy(), x11.numpy())
