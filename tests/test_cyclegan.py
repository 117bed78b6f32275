"""CycleGAN with set-level supervision (--variant=cyclegan, issue 15)."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import models
from bncr_tf import runs
from bncr_tf import variants
from bncr_tf.config import TrainConfig
from bncr_tf.degradations import settings
from bncr_tf.errors import UserError
from bncr_tf.networks import cyclegan as networks
from bncr_tf.training import checkpoints
from bncr_tf.training import cyclegan
from bncr_tf.training import loop


def tiny(outdir, **kw):
    values = dict(data="builtin:skimage_patches", data_limit=64, setting="O",
                  variant="cyclegan", width=4, d_batch=4, g_batch=4,
                  iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
                  grid_size=2, export_at_end=False, outdir=str(outdir),
                  resume="none", lr=2e-4, beta1=0.5, beta2=0.999,
                  ema_decay=0.0, pool_size=3)
    values.update(kw)
    return TrainConfig(**values).validate_all()


# --- Image pool -----------------------------------------------------------------

def numpy_pool(size, batches, uniforms, picks):
    """The reference semantics, image by image (CycleGAN's ImagePool)."""
    pool, out = [], []
    for batch, us, ps in zip(batches, uniforms, picks):
        returned = []
        for image, u, j in zip(batch, us, ps):
            if len(pool) < size:
                pool.append(image)
                returned.append(image)
            elif u > 0.5:
                returned.append(pool[j])
                pool[j] = image
            else:
                returned.append(image)
        out.append(np.stack(returned))
    return out, pool


def test_image_pool_matches_the_numpy_reference():
    rng = np.random.default_rng(0)
    size, batch, steps = 5, 3, 6
    batches = [rng.normal(size=(batch, 2, 2, 1)).astype(np.float32)
               for _ in range(steps)]
    uniforms = [rng.random(batch).astype(np.float32) for _ in range(steps)]
    picks = [rng.integers(0, size, batch).astype(np.int32)
             for _ in range(steps)]
    want, want_pool = numpy_pool(size, batches, uniforms, picks)
    pool = tf.zeros((size, 2, 2, 1))
    count = tf.constant(0, tf.int32)
    swapped = 0
    for b, u, p, w in zip(batches, uniforms, picks, want):
        got, pool, count = cyclegan.pool_query(pool, count, tf.constant(b),
                                               tf.constant(u), tf.constant(p))
        np.testing.assert_array_equal(got.numpy(), w)
        swapped += int(np.any(got.numpy() != b))
    np.testing.assert_array_equal(pool.numpy(), np.stack(want_pool))
    assert int(count) == size
    # The data exercise both branches: some old images were returned.
    assert swapped > 0


def test_image_pool_variables_follow_the_stateless_seed():
    a = cyclegan.ImagePool(2, (1, 1, 1), "a")
    b = cyclegan.ImagePool(2, (1, 1, 1), "b")
    for step in range(5):
        images = tf.fill((2, 1, 1, 1), float(step))
        seed = tf.constant([7, step], tf.int64)
        np.testing.assert_array_equal(a.query(images, seed).numpy(),
                                      b.query(images, seed).numpy())
    assert int(a.count.numpy()) == 2
    np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())
    off = cyclegan.ImagePool(0, (1, 1, 1), "off")
    x = tf.ones((2, 1, 1, 1))
    assert off.query(x, tf.constant([0, 0], tf.int64)) is x


# --- Losses and networks ----------------------------------------------------------

def test_cycle_and_identity_losses_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
    want = np.mean(np.abs(a - b))
    got = losses.cycle_consistency_loss(a, b, 10.0, "c")["c"]
    np.testing.assert_allclose(float(got), 10.0 * want, rtol=1e-6)
    got = losses.identity_loss(a, b, 5.0)["G/identity"]
    np.testing.assert_allclose(float(got), 5.0 * want, rtol=1e-6)
    scores = rng.normal(size=(2, 2, 2, 1)).astype(np.float32)
    np.testing.assert_allclose(
        float(losses.g_least_squares_loss(scores)["G/adv"]),
        np.mean((scores - 1) ** 2), rtol=1e-6)


def test_instance_norm_matches_numpy():
    x = np.random.default_rng(2).normal(2, 3, (2, 5, 6, 4)).astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(networks.instance_norm(x).numpy(),
                               (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)


def test_generator_takes_any_size_and_images_are_independent():
    g = networks.CycleGANGenerator(ngf=4, blocks=2, name="G")
    g.build()
    x = tf.random.uniform((3, 13, 22, 3), -1, 1, seed=1)
    out = g(x).numpy()
    assert out.shape == (3, 13, 22, 3)
    assert np.all(np.abs(out) < 1)
    np.testing.assert_allclose(g(x[1:2]).numpy(), out[1:2], atol=1e-5)
    assert g(tf.zeros((1, 1, 1, 3))).shape == (1, 1, 1, 3)
    d = networks.PatchDiscriminator(ndf=4)
    d.build()
    assert d(tf.zeros((2, 32, 32, 3))).shape == (2, 2, 2, 1)


# --- Set-level supervision ---------------------------------------------------------

def test_clean_mask_is_the_setting_ground_truth():
    clean_u8 = (np.random.default_rng(3).uniform(0, 255, (40, 16, 16, 3))
                .astype(np.uint8))
    degraded = loop.degrade_in_memory(clean_u8, settings.get_setting("O"),
                                      seed=5)
    mask = cyclegan.clean_mask("O", 40, 5)
    unchanged = np.all(degraded == clean_u8, axis=(1, 2, 3))
    np.testing.assert_array_equal(mask, unchanged)
    assert 0 < mask.sum() < 40
    assert not cyclegan.clean_mask("N", 40, 5).any()


@pytest.mark.parametrize("setting", ["N", "B", "J", "A"])
def test_settings_without_both_sets_give_a_clear_error(tmp_path, setting):
    with pytest.raises(UserError, match="set-level supervision"):
        tiny(tmp_path, setting=setting)
    assert variants.no_clean_reason(settings.get_setting("P")) is None
    assert "every image" in variants.no_clean_reason(
        settings.get_setting("N"))


def test_too_few_clean_images_for_a_batch(tmp_path):
    # Q leaves about (1/4)^3 of 64 images clean: fewer than 4.
    config = tiny(tmp_path, setting="Q")
    with pytest.raises(UserError, match="fewer than one batch"):
        loop.train(config)
    assert not os.listdir(tmp_path)


def test_cyclegan_defaults_are_the_reference_codes():
    d = variants.RESTORATION_DEFAULTS["cyclegan"]
    assert (d["lr"], d["beta1"], d["beta2"]) == (2e-4, 0.5, 0.999)
    c = TrainConfig()
    assert (c.cycle_weight, c.identity_weight, c.pool_size) == (10.0, 0.5,
                                                                50)


# --- Training ---------------------------------------------------------------------

def _trainer(tmp_path, **kw):
    config = tiny(tmp_path, **kw)
    images = loop.load_training_images(config)
    strategy = tf.distribute.get_strategy()
    return cyclegan.CycleGANTrainer(config, strategy, images)


def test_one_step_moves_every_trainable_variable_and_losses_add_up(tmp_path):
    trainer = _trainer(tmp_path)
    variables = trainer.g_variables + trainer.d_variables
    before = [v.numpy().copy() for v in variables]
    y, x = next(iter(trainer.real_batches(0)))
    values, _, _ = trainer.generator_losses(y, x)
    parts = [k for k in values if k != "G/loss"]
    assert set(parts) == {"G/adv", "F/adv", "G/cycle_y", "G/cycle_x",
                          "G/identity", "F/identity"}
    np.testing.assert_allclose(float(values["G/loss"]),
                               sum(float(values[k]) for k in parts),
                               rtol=1e-5)
    # The cycle term is 10 mean |F(G(y)) - y|, computed here by hand.
    cyc = np.mean(np.abs(trainer.F(trainer.G(y)).numpy() - y.numpy()))
    np.testing.assert_allclose(float(values["G/cycle_y"]), 10 * cyc,
                               rtol=1e-4)
    out = trainer.train_iteration((y, x), 0)
    assert all(np.isfinite(float(v)) for v in out.values())
    frozen = [v.path for v, b in zip(variables, before)
              if np.array_equal(v.numpy(), b)]
    assert not frozen, frozen
    assert int(trainer.pool_x.count.numpy()) == 3  # pool_size, batch 4


def test_batches_come_from_the_right_sets(tmp_path):
    trainer = _trainer(tmp_path)
    y8, x8 = trainer.batch_u8(3)
    clean = {a.tobytes() for a in trainer.clean_images}
    assert all(a.tobytes() in clean for a in x8)
    assert not any(a.tobytes() in clean for a in y8)
    y, x = next(iter(trainer.real_batches(3)))
    np.testing.assert_array_equal(
        np.floor((y.numpy() + 1) / 2 * 256).astype(np.uint8), y8)
    np.testing.assert_array_equal(
        np.floor((x.numpy() + 1) / 2 * 256).astype(np.uint8), x8)


@pytest.mark.slow
def test_run_grids_export_and_exact_resume(tmp_path):
    tf.config.experimental.enable_op_determinism()
    a = tiny(tmp_path / "a", iterations=1, checkpoint_every=1,
             deterministic=True, run_name="r")
    loop.train(a)
    run_a = loop.train(dataclasses.replace(a, iterations=3, resume="auto",
                                           checkpoint_every=3,
                                           grid_every=3))
    run_b = loop.train(tiny(tmp_path / "b", iterations=3, deterministic=True,
                            checkpoint_every=3, grid_every=3, run_name="r",
                            export_at_end=True))
    ta = checkpoints.read_tensors(runs.checkpoint_path(run_a))
    tb = checkpoints.read_tensors(runs.checkpoint_path(run_b))
    names = [k for k in ta if not k.startswith("save_counter")]
    for prefix in ("G/", "F/", "D_x/", "D_y/", "pool_x/", "pool_y/",
                   "opt_G/", "opt_D/"):
        assert any(k.startswith(prefix) for k in names), prefix
    for k in names:
        np.testing.assert_allclose(ta[k], tb[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    grid = tf.io.decode_png(tf.io.read_file(
        os.path.join(run_b, "grids", "fakes-0000003.png"))).numpy()
    assert grid.shape == (2 * 32, 3 * 32, 3)  # y | G(y) | F(G(y))
    with open(os.path.join(run_b, "stats.jsonl")) as fh:
        rec = json.loads(fh.readlines()[-1])
    for key in ("Loss/G/adv", "Loss/G/cycle_y", "Loss/D_x/loss",
                "Loss/D/loss", "Restoration/grid_change"):
        assert np.isfinite(rec[key]), key
    # The restore export and the run's restorer agree.
    config, g, _ = runs.load_restorer(run_b)
    assert isinstance(g, networks.CycleGANGenerator)
    versions = os.path.join(run_b, "export", "restore")
    loaded = tf.saved_model.load(os.path.join(versions,
                                              os.listdir(versions)[0]))
    x = tf.random.uniform((2, 20, 28, 3), -1, 1, seed=4)
    got = loaded.signatures["from_float"](image_float=x)["image_float"]
    np.testing.assert_allclose(got.numpy(),
                               np.clip(g(x).numpy(), -1, 1), atol=1e-5)
    assert models.build_restorer(config).count_params() == g.count_params()
    # The restore CLI restores an odd-sized photo with the run's G.
    from bncr_tf import restore as restore_cli
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo = np.random.default_rng(5).integers(0, 256, (19, 26, 3),
                                              dtype=np.uint8)
    (src / "p.png").write_bytes(tf.io.encode_png(photo).numpy())
    for model in (run_b, versions):
        done, skipped, _ = restore_cli.restore_folder(model, str(src),
                                                      str(dst),
                                                      overwrite=True)
        assert (done, skipped) == (1, [])
        got = tf.io.decode_png((dst / "p.png").read_bytes()).numpy()
        want = np.round((np.clip(g(photo[None] / 127.5 - 1.0).numpy()[0],
                                 -1, 1) + 1) * 127.5)
        assert got.shape == photo.shape
        assert np.abs(got.astype(int) - want).max() <= 1
