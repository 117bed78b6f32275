"""Restoration (issue 15): the UNIR restorer, its losses, the measurement F,
the --variant=unir trainer (UNIR-dagger and BNCR-GAN+UNIR) and the restore
export."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import export
from bncr_tf import losses
from bncr_tf import measurement
from bncr_tf import models
from bncr_tf import runs
from bncr_tf import synthesis
from bncr_tf.config import TrainConfig
from bncr_tf.errors import UserError
from bncr_tf.networks import restorer as restorer_lib
from bncr_tf.training import checkpoints
from bncr_tf.training import loop
from bncr_tf.training import restoration

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def tiny(outdir, **kw):
    values = dict(data="builtin:skimage_patches", data_limit=32, setting="N",
                  variant="unir", width=4, d_batch=4, g_batch=4, z_dim=16,
                  iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
                  grid_size=2, export_at_end=False, outdir=str(outdir),
                  resume="none", lr=1e-4, d_lr_scale=4.0, beta2=0.999)
    values.update(kw)
    return TrainConfig(**values).validate_all()


@pytest.fixture(scope="module")
def unir_run(tmp_path_factory):
    """One tiny UNIR-dagger run with its restore export."""
    out = tmp_path_factory.mktemp("unir")
    return loop.train(tiny(out, export_at_end=True, run_name="u"))


# --- Network ------------------------------------------------------------------

def test_restorer_takes_any_size_and_rows_are_independent():
    g = restorer_lib.Restorer(ngf=4)
    g.build()
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (5, 7), (40, 24)):
        y = rng.uniform(-1, 1, (3, h, w, 3)).astype(np.float32)
        out = g(y, training=False).numpy()
        assert out.shape == y.shape
        # Inference: BN uses moving statistics, so row 1 alone == in batch.
        alone = g(y[1:2], training=False).numpy()
        np.testing.assert_allclose(alone[0], out[1], atol=1e-5)


def test_spectral_norm_converges_to_the_largest_singular_value():
    layer = restorer_lib.SNConv2D(6, 3)
    layer.build((None, 8, 8, 5))
    x = tf.zeros([1, 8, 8, 5])
    for _ in range(60):
        layer(x, training=True)
    sigma, _ = layer.sigma()
    w = layer.kernel.numpy().reshape(-1, 6)
    np.testing.assert_allclose(float(sigma),
                               np.linalg.svd(w, compute_uv=False)[0],
                               rtol=1e-4)
    # Inference calls do not change u; the effective kernel has norm 1.
    u = layer.u.numpy().copy()
    layer(x, training=False)
    np.testing.assert_array_equal(u, layer.u.numpy())
    k = (layer.kernel / sigma).numpy().reshape(-1, 6)
    assert abs(np.linalg.svd(k, compute_uv=False)[0] - 1.0) < 1e-3


def test_attention_is_exact_full_attention_at_16_px():
    """At <= KEY_GRID px the key resize is the identity: compare with an
    independent numpy softmax attention."""
    att = restorer_lib.SelfAttention(2)
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 4)).astype(np.float32)
    att.build(x.shape)
    att.gamma.assign(0.7)
    got = att(x).numpy()

    def conv(layer, a):
        sigma, _ = layer.sigma()
        k = (layer.kernel / sigma).numpy()[0, 0]
        return a @ k + layer.bias.numpy()

    flat = x.reshape(-1, 4)
    q, k, v = (conv(layer, flat) for layer in (att.q, att.k, att.v))
    logits = q @ k.T
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    o = w @ (0.7 * v)
    want = flat + conv(att.out, o)
    np.testing.assert_allclose(got.reshape(-1, 4), want, atol=1e-4)


# --- Losses -------------------------------------------------------------------

def test_least_squares_losses_match_their_formulas():
    r = np.array([0.5, 2.0, -1.0], np.float32)
    f = np.array([0.1, -0.3], np.float32)
    d = losses.d_least_squares_loss(r, f)
    want = 0.5 * (np.mean((r - 1) ** 2) + np.mean(f ** 2))
    np.testing.assert_allclose(float(d["D/loss"]), want, rtol=1e-6)
    g = losses.g_least_squares_loss(f)
    np.testing.assert_allclose(float(g["G/adv"]), np.mean((f - 1) ** 2),
                               rtol=1e-6)


def test_measurement_reconstruction_has_no_gradient_into_its_target():
    a = tf.Variable(np.full([2, 4, 4, 3], 0.5, np.float32))
    b = tf.Variable(np.zeros([2, 4, 4, 3], np.float32))
    with tf.GradientTape() as tape:
        out = losses.measurement_reconstruction_loss(a, b, weight=2.0)
    ga, gb = tape.gradient(out["G/recon"], [a, b])
    assert gb is None
    np.testing.assert_allclose(float(out["G/recon"]), 2.0 * 0.25)
    np.testing.assert_allclose(ga.numpy(), 2.0 * 2 * 0.5 / a.numpy().size)


# --- Measurement F ------------------------------------------------------------

def test_unir_dagger_measurement_is_ambientgans_true_path():
    """F of --variant=unir --setting=N is exactly AmbientGAN's TRUE
    degradation (the same synthesis.degrade path and kernel bank), and the
    same theta gives the same degradation."""
    c = tiny("/tmp/unused")
    f = measurement.build_measurement(c)
    amb = models.build_generators(dataclasses.replace(
        c, variant="ambientgan", width=8))
    x = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1, 1)
    lat = f.theta(4, [3, 4])
    want = synthesis.degrade(amb, x, lat, [5, 6]).y
    got = f(x, lat, tf.constant([5, 6], tf.int64))
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    other = f(x, lat, tf.constant([5, 7], tf.int64))
    assert not np.array_equal(other.numpy(), got.numpy())


def test_unir_needs_a_degradation():
    with pytest.raises(UserError, match="clean"):
        tiny("/tmp/unused", setting="A")
    with pytest.raises(UserError, match="degradation_from"):
        TrainConfig(variant="gan", degradation_from="x").validate_all()


# --- Trainer ------------------------------------------------------------------

def test_discriminator_scores_the_remeasured_restoration(monkeypatch):
    """D's fakes are F(G(y)) (the paper), not G(y) (the released code)."""
    tf.config.run_functions_eagerly(True)
    try:
        c = tiny("/tmp/unused")
        images = np.random.default_rng(0).integers(
            0, 256, (4, 32, 32, 3)).astype(np.uint8)
        trainer = restoration.RestorationTrainer(
            c, tf.distribute.get_strategy(), images)
        seen, measured, restored = [], [], []
        d, f, g = trainer.D, trainer.F.__call__, trainer.G

        class Spy:
            def __init__(self, fn, log):
                self.fn, self.log = fn, log

            def __call__(self, *a, **kw):
                out = self.fn(*a, **kw)
                self.log.append((a[0].numpy(), out.numpy()))
                return out

        trainer.D = Spy(d, seen)
        trainer.D.trainable_variables = d.trainable_variables
        monkeypatch.setattr(trainer, "F", dataclasses.replace(trainer.F))
        monkeypatch.setattr(type(trainer.F), "__call__",
                            lambda self, *a: Spy(f, measured)(*a))
        trainer.G = Spy(g, restored)
        trainer.G.trainable_variables = g.trainable_variables
        y = images.astype(np.float32) / 127.5 - 1.0
        trainer.train_iteration(tf.constant(y), 0)
        # G step: D(y_hat); D step: D(y) and D(y_hat).
        y_hat = measured[0][1]
        np.testing.assert_array_equal(measured[0][0], restored[0][1])
        assert len(seen) == 3
        np.testing.assert_array_equal(seen[0][0], y_hat)
        np.testing.assert_allclose(seen[1][0], y)
        np.testing.assert_array_equal(seen[2][0], y_hat)
        assert not np.allclose(seen[2][0], restored[0][1])
        # The back-restoration restores y_hat and is re-measured.
        np.testing.assert_array_equal(restored[1][0], y_hat)
        np.testing.assert_array_equal(measured[1][0], restored[1][1])
    finally:
        tf.config.run_functions_eagerly(False)


def test_unir_run_writes_grids_checkpoints_and_resumes_exactly(tmp_path):
    tf.config.experimental.enable_op_determinism()
    a = tiny(tmp_path / "a", iterations=1, checkpoint_every=1,
             deterministic=True, run_name="r")
    loop.train(a)
    run_a = loop.train(dataclasses.replace(a, iterations=2, resume="auto"))
    run_b = loop.train(tiny(tmp_path / "b", iterations=2, deterministic=True,
                            run_name="r"))
    ta = checkpoints.read_tensors(runs.checkpoint_path(run_a))
    tb = checkpoints.read_tensors(runs.checkpoint_path(run_b))
    names = [k for k in ta if not k.startswith("save_counter")]
    assert any(k.startswith("G/") and "moving_mean" in k for k in names)
    assert any(k.startswith("G/") and k.split("/")[1].endswith(".u")
               for k in names), names[:20]
    for k in names:
        np.testing.assert_allclose(ta[k], tb[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    grid = tf.io.decode_png(tf.io.read_file(
        os.path.join(run_b, "grids", "fakes-0000002.png"))).numpy()
    assert grid.shape == (2 * 32, 3 * 32, 3)  # y | x_hat | F(x_hat)
    with open(os.path.join(run_b, "stats.jsonl")) as fh:
        rec = json.loads(fh.readlines()[-1])
    for key in ("Loss/G/adv", "Loss/G/recon", "Loss/D/loss",
                "Restoration/grid_change"):
        assert np.isfinite(rec[key]), key
    assert rec["Loss/G/recon_weight"] == 2.0


def test_bncrgan_unir_keeps_the_degradation_generators_frozen(tmp_path):
    src = loop.train(TrainConfig(
        data="builtin:skimage_patches", data_limit=32, setting="N",
        variant="bncrgan", width=8, d_batch=4, g_batch=4, z_dim=16,
        iterations=1, log_every=1, export_at_end=False,
        outdir=str(tmp_path), resume="none").validate_all())
    c = tiny(tmp_path, degradation_from=src)
    images = np.random.default_rng(0).integers(
        0, 256, (4, 32, 32, 3)).astype(np.uint8)
    trainer = restoration.RestorationTrainer(
        c, tf.distribute.get_strategy(), images)
    assert set(trainer.F.models()) == {"G_k", "G_n", "G_q"}
    assert "BNCR-GAN+UNIR" in trainer.F.description
    # F is the source run's EMA generators.
    _, src_gens, _ = runs.load_generators(src)
    for name, model in trainer.F.models().items():
        for a, b in zip(model.variables,
                        src_gens.models()[name].variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    frozen = [v.numpy().copy() for v in
              measurement.frozen_variables(trainer.F)]
    g_before = [v.numpy().copy() for v in trainer.G.trainable_variables]
    y = tf.constant(images.astype(np.float32) / 127.5 - 1.0)
    trainer.train_iteration(y, 0)
    trainer.train_iteration(y, 1)
    after = [v.numpy() for v in measurement.frozen_variables(trainer.F)]
    assert len(frozen) > 10
    for a, b in zip(frozen, after):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, v.numpy()) for a, v in
               zip(g_before, trainer.G.trainable_variables))
    with pytest.raises(UserError, match="resolution"):
        measurement.build_measurement(dataclasses.replace(c, resolution=64))


# --- Export -------------------------------------------------------------------

FRESH = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    out = {}
    for key in sorted(data.files):
        if key.startswith("u8_"):
            r = model.signatures["serving_default"](image=tf.constant(
                data[key]))
        else:
            r = model.signatures["from_float"](image_float=tf.constant(
                data[key]))
        out[key + "_image"] = r["image"].numpy()
        out[key + "_float"] = r["image_float"].numpy()
    assert not any(m.startswith("bncr_tf") for m in sys.modules)
    np.savez(sys.argv[3], **out)
""")


def test_restore_export_in_a_fresh_process_matches_the_restorer(
        unir_run, tmp_path):
    version = os.path.join(unir_run, "export", "restore", "1")
    assert os.path.isfile(os.path.join(version, "assets.extra",
                                       export.WARMUP_FILE))
    _, g, _ = runs.load_restorer(unir_run)
    rng = np.random.default_rng(3)
    inputs = {"u8_a": rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8),
              "u8_b": rng.integers(0, 256, (1, 45, 17, 3)).astype(np.uint8),
              "f_c": rng.uniform(-1, 1, (1, 9, 70, 3)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    subprocess.run([sys.executable, str(script), version,
                    str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, env=ENV, cwd=str(tmp_path))
    out = np.load(tmp_path / "out.npz")
    for key, x in inputs.items():
        xf = x.astype(np.float32) / 127.5 - 1.0 if x.dtype == np.uint8 \
            else x
        want = np.clip(g(xf, training=False).numpy(), -1, 1)
        np.testing.assert_allclose(out[key + "_float"], want, atol=1e-5)
        want_u8 = np.clip(np.round((want + 1) * 127.5), 0, 255)
        assert out[key + "_image"].shape == x.shape
        assert np.abs(out[key + "_image"].astype(int) - want_u8).max() <= 1
    with open(os.path.join(version, "assets.extra", export.INFO_FILE)) as f:
        info = json.load(f)
    assert info["model"] == "restore" and info["step"] == 2
    assert set(info["signatures"]) == {"serving_default", "from_float"}


def test_restore_export_rejects_bad_shapes(unir_run):
    model = tf.saved_model.load(
        os.path.join(unir_run, "export", "restore", "1"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="restore"):
        model.signatures["serving_default"](
            image=tf.zeros([1, 8, 8, 4], tf.uint8))


def test_warmup_records_of_the_restore_export_parse(unir_run):
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(unir_run, "export", "restore", "1", "assets.extra",
                        export.WARMUP_FILE)
    keys = []
    for raw in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        req = log.predict_log.request
        assert req.model_spec.name == "restore"
        keys.append(req.model_spec.signature_name)
        for tensor in req.inputs.values():
            shape = tf.make_ndarray(tensor).shape
            assert shape == (export.WARMUP_BATCH, export.WARMUP_SIZE,
                             export.WARMUP_SIZE, 3)
    assert sorted(keys) == ["from_float", "serving_default"]


# --- Restore CLI --------------------------------------------------------------

def _png_depth(data):
    return data[24]


def test_restore_cli_handles_every_kind_of_file(unir_run, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    rgb = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    rgba = rng.integers(0, 256, (8, 9, 4)).astype(np.uint8)
    grey = rng.integers(0, 256, (10, 12, 1)).astype(np.uint8)
    deep = rng.integers(0, 65536, (7, 5, 3)).astype(np.uint16)
    files = {
        "rgb.png": tf.io.encode_png(rgb).numpy(),
        "photo.JPG": tf.io.encode_jpeg(rgb[:17]).numpy(),
        "grey.png": tf.io.encode_png(grey).numpy(),
        "rgba.png": tf.io.encode_png(rgba).numpy(),
        "deep.png": tf.io.encode_png(deep).numpy(),
        "empty.png": b"",
        "corrupt.jpg": b"\xff\xd8\xff" + b"garbage" * 10,
        "text.png": b"not an image",
        "notes.txt": b"ignored",
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "bncr_tf.restore", f"--model={unir_run}",
         f"--input={src}", f"--output={out}"],
        capture_output=True, text=True, env=ENV)
    assert run.returncode == 1, run.stderr
    assert "restored 5, skipped 3, ignored 1" in run.stdout
    for name, why in (("empty.png", "empty file"),
                      ("corrupt.jpg", "corrupt or truncated JPEG"),
                      ("text.png", "not PNG or JPEG")):
        assert f"{name}: skipped: {why}" in run.stderr, run.stderr
    assert sorted(os.listdir(out)) == sorted(
        ["rgb.png", "photo.JPG", "grey.png", "rgba.png", "deep.png"])
    # The input folder is untouched.
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before

    _, g, _ = runs.load_restorer(unir_run)

    def restored(x):
        return np.clip(g(x[None], training=False).numpy()[0], -1, 1)

    got = tf.io.decode_png((out / "rgb.png").read_bytes()).numpy()
    want = np.round((restored(rgb / 127.5 - 1.0) + 1) * 127.5)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (out / "photo.JPG").read_bytes()[:3] == b"\xff\xd8\xff"
    assert tf.io.decode_jpeg((out / "photo.JPG").read_bytes()).shape == (
        17, 30, 3)
    g_out = tf.io.decode_png((out / "grey.png").read_bytes()).numpy()
    assert g_out.shape == (10, 12, 1)
    a_out = tf.io.decode_png((out / "rgba.png").read_bytes()).numpy()
    assert a_out.shape == (8, 9, 4)
    np.testing.assert_array_equal(a_out[..., 3], rgba[..., 3])
    want = np.round((restored(rgba[..., :3] / 127.5 - 1.0) + 1) * 127.5)
    assert np.abs(a_out[..., :3].astype(int) - want).max() <= 1
    d_bytes = (out / "deep.png").read_bytes()
    assert _png_depth(d_bytes) == 16
    d_out = tf.io.decode_png(d_bytes, dtype=tf.uint16).numpy()
    want = np.round((restored(deep / 65535.0 * 2 - 1) + 1) / 2 * 65535)
    assert np.abs(d_out.astype(int) - want).max() <= 1

    # Never into the input folder; an existing output is not replaced.
    inside = subprocess.run(
        [sys.executable, "-m", "bncr_tf.restore",
         f"--model={unir_run}/export/restore", f"--input={src}",
         f"--output={src}/sub"], capture_output=True, text=True, env=ENV)
    assert inside.returncode == 2
    assert inside.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (src / "sub").exists()


def test_restore_cli_export_and_run_agree_and_existing_files_are_kept(
        unir_run, tmp_path):
    from bncr_tf import restore as restore_cli
    src = tmp_path / "in"
    src.mkdir()
    img = np.random.default_rng(1).integers(0, 256, (21, 13, 3)).astype(
        np.uint8)
    (src / "a.png").write_bytes(tf.io.encode_png(img).numpy())
    outs = []
    for i, model in enumerate((unir_run, os.path.join(
            unir_run, "export", "restore"))):
        out = tmp_path / f"out{i}"
        done, skipped, _ = restore_cli.restore_folder(
            model, str(src), str(out), out=open(os.devnull, "w"),
            err=open(os.devnull, "w"))
        assert (done, skipped) == (1, [])
        outs.append(tf.io.decode_png((out / "a.png").read_bytes()).numpy())
    assert np.abs(outs[0].astype(int) - outs[1]).max() <= 1
    done, skipped, _ = restore_cli.restore_folder(
        unir_run, str(src), str(tmp_path / "out0"),
        out=open(os.devnull, "w"), err=open(os.devnull, "w"))
    assert done == 0 and "overwrite" in skipped[0][1]
    with pytest.raises(UserError, match="inside"):
        restore_cli.check_folders(str(src), str(src / "x" / ".."))


# --- Evaluation ---------------------------------------------------------------

def test_restoration_fid_and_the_lpips_hook(unir_run, tmp_path, monkeypatch):
    import types
    from bncr_tf import data
    from bncr_tf.degradations import builder
    from bncr_tf.metrics import features
    from bncr_tf.metrics import fid as fid_lib
    from bncr_tf.metrics import restoration as restoration_metrics
    # The hook: a stand-in bncr_tf.metrics.lpips (per-image mean |a - b|).
    fake = types.ModuleType("bncr_tf.metrics.lpips")
    fake.lpips_distance = lambda a, b: np.abs(
        a.astype(np.float64) - b).mean(axis=(1, 2, 3))
    monkeypatch.setitem(sys.modules, "bncr_tf.metrics.lpips", fake)
    extractor = features.make_extractor("random_conv", seed=0)
    records = restoration_metrics.evaluate_restoration(
        unir_run, extractor=extractor, test_limit=40, test_setting="N",
        metrics=("fid", "lpips"), seed=5, cache=str(tmp_path),
        metrics_dir=str(tmp_path), progress=False, log=lambda *_: None)
    by = {r["metric"]: r for r in records}
    assert set(by) == {"restore_fid40", "restore_lpips40"}
    # Independent reference: clean test patches (data_seed + 1000), the
    # builder's degradation, the restorer, features and FID by hand.
    clean, _ = data.load_clean_uint8("builtin:skimage_patches", 32,
                                     limit=40, seed=1000)
    degraded, _ = builder.degrade_chunk(
        __import__("bncr_tf.degradations.settings",
                   fromlist=["x"]).get_setting("N"), clean, 0, 40, 5)
    _, g, _ = runs.load_restorer(unir_run)
    x = np.clip(g(degraded / 127.5 - 1.0, training=False).numpy(), -1, 1)
    restored = np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)

    def fid(a, b):
        fa, fb = (np.asarray(extractor(i), np.float64) for i in (a, b))
        return fid_lib.frechet_distance(fa.mean(0), np.cov(fa, rowvar=False),
                                        fb.mean(0), np.cov(fb, rowvar=False))

    np.testing.assert_allclose(by["restore_fid40"]["value"],
                               fid(restored, clean), rtol=1e-3)
    np.testing.assert_allclose(by["restore_fid40"]["degraded_value"],
                               fid(degraded, clean), rtol=1e-3)
    np.testing.assert_allclose(
        by["restore_lpips40"]["value"],
        np.abs(restored.astype(float) - clean).mean(), rtol=1e-6)
    assert by["restore_lpips40"]["test_setting"] == "N"
    mse = np.mean((restored.astype(float) - clean) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(by["restore_fid40"]["psnr_db"], np.mean(
        10 * np.log10(255.0 ** 2 / mse)), rtol=1e-9)
    assert os.path.isfile(tmp_path / "metric-restore_fid40.jsonl")
    monkeypatch.delitem(sys.modules, "bncr_tf.metrics.lpips")
    monkeypatch.setattr(restoration_metrics, "LPIPS_MODULE",
                        "bncr_tf.metrics.no_such_module")
    with pytest.raises(UserError, match="lpips"):
        restoration_metrics.evaluate_restoration(
            unir_run, metrics=("lpips",), test_limit=4, log=lambda *_: None)


def test_export_from_run_exports_a_restoration_run(unir_run, tmp_path):
    paths = export.export_from_run(unir_run, export_root=str(tmp_path))
    assert paths == [str(tmp_path / "restore" / "1")]
    with pytest.raises(UserError, match="only the restore model"):
        export.export_from_run(unir_run, export_root=str(tmp_path),
                               models=["generator"])
