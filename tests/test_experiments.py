"""The experiment tools of docs/results.md, on tiny data: every number they
print is computed from runs they train, and a rerun does not retrain."""

import gzip
import json
import os
import types

import numpy as np
import pytest

from conftest import load_tool as _tool


def test_identification_tool_end_to_end(tmp_path, capsys):
    tool = _tool("run_identification")
    out = tmp_path / "ident"
    argv = [f"--out={out}", "--settings=H,B", "--iterations=3",
            "--log_every=1", "--checkpoint_every=3", "--samples=256",
            "--width=8", "--d_batch=8", "--g_batch=8",
            "--data=builtin:skimage_patches:count=64",
            "--reference=builtin:skimage_patches:count=64",
            "--train_flags=--z_dim=16"]
    assert tool.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["setting"]: r for r in summary["rows"]}
    assert set(rows) == {"H", "B"}
    # Truth of H: libjpeg qualities drawn uniformly from 60..80 (mean 70,
    # sd of a 64-image mean ~0.8); of B: disk kernels, entropy > 0.
    assert abs(rows["H"]["true"] - 70.0) < 3.0
    assert rows["B"]["true"] > 0.5
    for row in rows.values():
        assert row["iterations"] == 3
        assert row["passes"] == (
            abs(row["learned"] - row["true"])
            <= (5.0 if row["stage"] == "jpeg" else 0.2 * row["true"]))
        assert row["moved_toward_truth"] == (
            abs(row["learned"] - row["true"])
            < abs(row["initial"] - row["true"]))
    # Three steps of Adam at lr 2e-4 barely move G_q: learned ~ initial.
    assert abs(rows["H"]["learned"] - rows["H"]["initial"]) < 3.0
    table = (out / "table.md").read_text()
    assert "| H | crgan | mean q |" in table and "| B | brgan |" in table
    assert "H vs I" not in table  # no I run, no separation line
    assert (out / "trajectories.png").stat().st_size > 0
    for setting in ("H", "B"):
        assert (out / setting / "report" / "summary.json").is_file()
        assert "bncr_tf.train" in (out / setting / "command.txt").read_text()
    capsys.readouterr()
    # A rerun reuses the finished runs.
    assert tool.main(argv) == 0
    assert "already trained" in capsys.readouterr().out
    assert len(os.listdir(out / "runs")) == 2


def test_identification_tool_rejects_unknown_settings(tmp_path, capsys):
    tool = _tool("run_identification")
    assert tool.main([f"--out={tmp_path}", "--settings=H,Z"]) == 2
    assert "unknown settings" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="bad --variants"):
        tool.parse_variants("Q:crgan")


def test_jpeg_ablation_configs_rows_and_errors(tmp_path, capsys):
    tool = _tool("run_jpeg_ablation")
    full = set(tool.CONFIGS["all"])
    assert len(full) == 4 and tool.CONFIGS["paper"] == []
    for name in ("no_storage", "no_highpass", "analytic"):
        assert len(full - set(tool.CONFIGS[name])) == 1, name
    assert "--r1_weight=10" in tool.CONFIGS["r1_10"]
    # A finished configuration's summary becomes one row.
    rows = [{"setting": "H", "true": 70.0, "initial": 91.0,
             "learned": 63.0},
            {"setting": "I", "true": 90.0, "initial": 91.0,
             "learned": 88.0}]
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "summary.json").write_text(
        json.dumps({"rows": rows}))
    row = tool.row_of("all", str(tmp_path))
    assert row["H_moved_toward_truth"] == pytest.approx(21.0 - 7.0)
    assert row["I_minus_H"] == pytest.approx(25.0)
    assert row["fast_test_holds"]
    rows[0]["learned"] = 52.0  # moved 21 -> 18: only 3 toward the truth
    (tmp_path / "all" / "summary.json").write_text(
        json.dumps({"rows": rows}))
    assert not tool.row_of("all", str(tmp_path))["fast_test_holds"]
    assert tool.main([f"--out={tmp_path}", "--configs=all,bogus"]) == 2
    assert "unknown configurations" in capsys.readouterr().err


def test_jpeg_probe_tool_tiny(tmp_path, capsys):
    tool = _tool("probe_jpeg_discriminator")
    out = tmp_path / "probe.json"
    base = ["--steps=2", "--log_every=1", "--width=8", "--batch=8",
            "--data=builtin:skimage_patches:count=64",
            "--reference=builtin:skimage_patches:count=64",
            "--grad_qualities=40,100", f"--out={out}"]
    assert tool.main(base + ["--q_fake=true,100", "--d_highpass=5",
                             "--jpeg_storage", "--r1_weight=0"]) == 0
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"true", "100"}
    assert abs(result["true_mean_q"] - 70.0) < 3.0
    for curve in result["curves"].values():
        assert [p["step"] for p in curve] == [1, 2]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve)
    for rows in result["gradient_check"].values():
        assert [r["q"] for r in rows] == [40.0, 100.0]
        for r in rows:
            assert all(np.isfinite(r[k]) for k in
                       ("analytic", "fd", "finite_difference"))
    capsys.readouterr()
    # Qualities "drawn from the setting" need a setting that compresses.
    assert tool.main(base + ["--q_fake=true", "--setting=B"]) == 2
    assert "--q_fake=true" in capsys.readouterr().err


def test_setting_probe_tool_tiny(tmp_path, capsys):
    """tools/probe_setting_discriminator.py: one fresh D per fake setting,
    a curve per --log_every steps and a held-out accuracy; the two sides
    are the builder's degradations of the same patches; one-line errors
    for bad settings and held-out sizes."""
    tool = _tool("probe_setting_discriminator")
    out = tmp_path / "probe.json"
    base = ["--steps=2", "--log_every=1", "--width=8", "--batch=8",
            "--data=builtin:skimage_patches:count=64", "--held_out=16",
            f"--out={out}"]
    assert tool.main(base + ["--fake_settings=noise,H", "--d_highpass=5",
                             "--d_block_grid=5", "--r1_weight=0"]) == 0
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"noise", "H"}
    for name, curve in result["curves"].items():
        assert [p["step"] for p in curve] == [1, 2]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve)
        # 16 + 16 held-out images: accuracy on a grid of 1/32.
        acc = result["held_out_accuracy"][name]
        assert 0.0 <= acc <= 1.0 and float(acc * 32).is_integer()
    assert result["args"]["d_block_grid"] == 5.0
    capsys.readouterr()
    assert tool.main(base + ["--fake_settings=B,nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert tool.main(base + ["--held_out=64"]) == 2
    assert "--held_out" in capsys.readouterr().err


def test_setting_probe_tool_fakes_from_a_run(tmp_path, capsys):
    """--fake_run: the fakes are a trained run's G_x samples (one per real
    image, as the grids store them), and D's residual factor is a flag."""
    from bncr_tf.training import loop
    from bncr_tf.training.config import TrainConfig
    run_dir = loop.train(TrainConfig(
        variant="gan", setting="A", data="builtin:skimage_patches:count=64",
        width=8, d_batch=8, g_batch=8, iterations=2, log_every=1,
        grid_every=2, checkpoint_every=2, export_at_end=False,
        outdir=str(tmp_path / "runs"), run_name="g",
        resume="none").validate_all())
    tool = _tool("probe_setting_discriminator")
    fakes = tool.run_samples_uint8(run_dir, 40, ema=False)
    assert fakes.shape == (40, 32, 32, 3) and fakes.dtype == np.uint8
    # Not constant: G_x's samples, not a fill value; the latents are fixed.
    assert fakes.std() > 1.0
    np.testing.assert_array_equal(
        fakes, tool.run_samples_uint8(run_dir, 40, ema=False))
    out = tmp_path / "probe.json"
    assert tool.main(["--steps=2", "--log_every=1", "--width=8",
                      "--batch=8", "--data=builtin:skimage_patches:count=64",
                      "--held_out=16", "--residual_factor=1",
                      f"--fake_run={run_dir}", f"--out={out}"]) == 0
    result = json.loads(out.read_text())
    assert set(result["curves"]) == {"G_x"}
    assert result["args"]["residual_factor"] == 1.0
    capsys.readouterr()
    assert tool.main(["--fake_run=/no/such/run", f"--out={out}",
                      "--data=builtin:skimage_patches:count=64",
                      "--held_out=16"]) == 2
    assert "--fake_run" in capsys.readouterr().err


def test_comparison_runs_and_table():
    tool = _tool("run_fmnist_comparison")
    assert tool.parse_runs("N:gan:0,D:brgan:1") == [("N", "gan", 0),
                                                   ("D", "brgan", 1)]
    for bad in ("N:gan", "N:gan:x"):
        with pytest.raises(ValueError, match="SETTING:VARIANT:SEED"):
            tool.parse_runs(bad)
    rows = [dict(setting="N", variant="gan", seed=0, name="gan-N-s0",
                 fid=10.0, iterations=5, seconds=60.0),
            dict(setting="N", variant="gan", seed=1, name="gan-N-s1",
                 fid=14.0, iterations=5),
            dict(setting="D", variant="bncrgan", seed=0, name="bncrgan-D-s0",
                 fid=3.0, iterations=5, seconds=120.0)]
    text = tool.table(rows, {"clean": 0.5, "N": 20.0, "D": 7.0},
                      {"test_accuracy": 0.9156})
    lines = text.splitlines()
    assert lines[0] == "| model | (D) | (N) |"
    # Seeds are averaged, with the single values in brackets.
    assert "| GAN | – | 12.00 (10.00, 14.00) |" in lines
    assert "| BNCR-GAN | 3.00 | – |" in lines
    assert "| *degraded training images* | *7.00* | *20.00* |" in lines
    assert "91.56 %" in text and "| gan-N-s0 | 5 | 1.0 min | 10.00 |" in lines


def _idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


@pytest.mark.slow
def test_comparison_tool_end_to_end(tmp_path):
    """Two tiny runs on a fake Fashion-MNIST, the classifier trained by the
    tool, FIDs on its features."""
    data_dir = tmp_path / "fashion"
    _fake_fashion(data_dir)
    tool = _tool("run_fmnist_comparison")
    out = tmp_path / "cmp"
    classifier = tmp_path / "clf" / "classifier.keras"
    assert tool.main([
        f"--out={out}", "--runs=J:gan:0,J:crgan:0", "--iterations=2",
        "--log_every=1", "--checkpoint_every=2", "--width=8",
        "--d_batch=8", "--g_batch=8", "--data_limit=0", "--fid_samples=200",
        f"--data=fashion_mnist:train:{data_dir}",
        f"--reference=fashion_mnist:test:{data_dir}",
        f"--classifier={classifier}", "--jobs=2",
        "--train_flags=--z_dim=16"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ["gan-J-s0", "crgan-J-s0"]
    assert all(r["fid"] > 0 and r["iterations"] == 2
               for r in summary["rows"])
    # Two-step generators are far from the data; clean training images of
    # the same classes are much closer to the test set.
    assert summary["data_fids"]["clean"] < min(
        r["fid"] for r in summary["rows"])
    assert "J" in summary["data_fids"]
    assert classifier.is_file() and summary["classifier"]["test_accuracy"]


def test_comparison_restoration_baselines_train_a_plain_gan():
    tool = _tool("run_fmnist_comparison")
    args = types.SimpleNamespace(  # the flags train_command reads
        data="fashion_mnist:train", data_limit=20000, resolution=32,
        width=32, d_batch=32,
        g_batch=64, iterations=1500, lr=2e-4, ema_decay=0.99, log_every=100,
        checkpoint_every=500, train_flags="")
    cmd = tool.train_command("D", "deblur_gan", 0, args, "/o/runs")
    assert "--data=/o/data/D_deblur_gt" in cmd and "--setting=A" in cmd
    assert "--variant=gan" in cmd and "--data_limit=0" in cmd
    assert "--run_name=deblur_gan-D-s0" in cmd
    cmd = tool.train_command("J", "crgan", 0, args, "/o/runs")
    assert "--setting=J" in cmd and "--variant=crgan" in cmd


def _fake_fashion(data_dir):
    rng = np.random.default_rng(0)
    data_dir.mkdir()
    for prefix, n in (("train", 400), ("t10k", 300)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[4:4 + 2 * label + 4, 4:4 + 2 * label + 4] = 220
        (data_dir / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(images)))
        (data_dir / f"{prefix}-labels-idx1-ubyte").write_bytes(
            _idx(labels.astype(np.uint8)))


@pytest.mark.slow
def test_comparison_tool_restoration_baselines_end_to_end(tmp_path):
    """Deblur+GAN† and Deblock+GAN rows: restored sets built, plain GANs
    trained on them for two steps and scored."""
    data_dir = tmp_path / "fashion"
    _fake_fashion(data_dir)
    tool = _tool("run_fmnist_comparison")
    out = tmp_path / "cmp"
    assert tool.main([
        f"--out={out}", "--runs=D:deblur_gan:0,J:deblock_gan:0",
        "--iterations=2", "--log_every=1", "--checkpoint_every=2",
        "--width=8", "--d_batch=8", "--g_batch=8", "--data_limit=0",
        "--fid_samples=200", f"--data=fashion_mnist:train:{data_dir}",
        f"--reference=fashion_mnist:test:{data_dir}",
        f"--classifier={tmp_path / 'clf' / 'classifier.keras'}",
        "--jobs=1", "--train_flags=--z_dim=16"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["rows"]] == [
        "deblur_gan-D-s0", "deblock_gan-J-s0"]
    assert all(r["fid"] > 0 and r["iterations"] == 2
               for r in summary["rows"])
    for name in ("D_deblur_gt", "J_deblock"):
        info = json.loads((out / "data" / name / "summary.json").read_text())
        assert info["num_images"] == 400 and "restore" in info
    assert "Deblur+GAN†" in (out / "table.md").read_text()


def test_full_identification_verdicts_on_known_numbers():
    """stage_rows: present stages against the truth, absent stages against
    the 'off' criteria, on hand-made distributions."""
    tool = _tool("run_full_identification")
    k_id = np.zeros([4, 7, 7])
    k_id[:, 3, 3] = 1.0
    shifted = np.zeros([4, 7, 7])
    shifted[:, 0, 0] = 1.0
    off = {"kernel": k_id, "entropy": np.zeros(4), "m_k": np.full(4, 0.5),
           "q": np.full(4, 97.0), "m_q": np.full(4, 0.9),
           "noise_std": np.full((4, 3), 0.004)}
    rows = tool.stage_rows("A", off, None, noise_n_true=0.02)
    assert all(r["passes"] for r in rows.values()), rows
    # A shifted delta has entropy 0 but is not the identity; noise above a
    # quarter of N's is not off; q 90 with the mask on is compression.
    bad = dict(off, kernel=shifted, noise_std=np.full((4, 3), 0.006),
               q=np.full(4, 90.0))
    rows = tool.stage_rows("A", bad, None, noise_n_true=0.02)
    assert not any(r["passes"] for r in rows.values()), rows
    # A small mean per-tap mask does not make a blurring kernel "off".
    blurry = np.full([4, 7, 7], 1.0 / 49)
    rows = tool.stage_rows("A", dict(off, kernel=blurry,
                                     entropy=np.full(4, np.log(49.0)),
                                     m_k=np.full(4, 0.05)),
                           None, noise_n_true=0.02)
    assert not rows["blur"]["passes"]
    # Present stages (H: JPEG only, q in [60, 80], every image).
    true = {"q": np.array([60.0, 70.0, 80.0, 70.0])}
    learned = dict(off, q=np.array([65.0, 70.0, 20.0, 76.0]),
                   m_q=np.array([0.9, 0.8, 0.1, 0.7]),
                   m_k=np.zeros(4))
    rows = tool.stage_rows("H", learned, true, noise_n_true=0.02)
    j = rows["jpeg"]
    assert j["present"] and j["true"] == 70.0 and j["true_share"] == 1.0
    assert j["q_compressed"] == pytest.approx(70.333, abs=1e-3)
    assert j["share_compressed"] == 0.75 and j["passes"]
    rows = tool.stage_rows("H", dict(learned, m_q=np.full(4, 0.2)), true,
                           noise_n_true=0.02)
    assert not rows["jpeg"]["passes"]   # nothing compressed
    # Blur within +-25 % of the true mean entropy.
    true_b = {"entropy": np.array([1.0, 2.0])}
    rows = tool.stage_rows("B", dict(off, entropy=np.array([1.2, 2.3])),
                           true_b, noise_n_true=0.02)
    assert rows["blur"]["passes"] and rows["blur"]["error"] == (
        pytest.approx(1.75 / 1.5 - 1))
    rows = tool.stage_rows("B", dict(off, entropy=np.array([0.5, 0.5])),
                           true_b, noise_n_true=0.02)
    assert not rows["blur"]["passes"]
    # A variant without a stage (NR-GAN: noise only): the missing stage
    # passes where the data lack it and fails where they have it.
    noise_only = {"noise_std": np.full((4, 3), 0.03)}
    rows = tool.stage_rows("noise", noise_only, {"noise_std": np.full(
        (4, 3), 0.03)}, noise_n_true=0.02)
    assert rows["noise"]["passes"] and rows["noise"]["modelled"]
    assert rows["blur"]["passes"] and not rows["blur"]["modelled"]
    assert rows["jpeg"]["passes"] and not rows["jpeg"]["modelled"]
    rows = tool.stage_rows("N", noise_only, {
        "noise_std": np.full((4, 3), 0.03), "entropy": np.ones(4),
        "q": np.full(4, 80.0)}, noise_n_true=0.02)
    assert not rows["blur"]["passes"] and not rows["jpeg"]["passes"]
    assert "not modelled" in tool._cell(rows["blur"])


def test_hiding_probe_scores_with_the_runs_own_d(tmp_path, capsys):
    """tools/probe_hiding.py: the reals + A cell is the mean logit of the
    run's D (restored here independently, tensor by tensor from the
    checkpoint file) on the run's clean patches, dequantised as in
    training; a degradation that changes the images changes the score."""
    import tensorflow as tf
    from bncr_tf import data, models, runs
    from bncr_tf.training import loop
    from bncr_tf.training.config import TrainConfig
    config = TrainConfig(
        data="builtin:skimage_patches", data_limit=32, setting="A",
        variant="bncrgan", width=8, d_batch=8, g_batch=8, z_dim=16,
        iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
        export_at_end=False, outdir=str(tmp_path / "runs")).validate_all()
    run_dir = loop.train(config)
    tool = _tool("probe_hiding")
    out = tmp_path / "probe.json"
    assert tool.main([f"--run={run_dir}", "--count=32", "--seed=3",
                      "--conditions=A,noise", f"--out={out}"]) == 0
    (result,) = json.loads(out.read_text())
    assert result["step"] == 2 and result["count"] == 32
    assert set(result["fakes"]) == {"A", "noise", "learned"}

    D = models.build_discriminator(runs.load_config(run_dir))
    reader = tf.train.load_checkpoint(runs.checkpoint_path(run_dir))
    for key, var in models.checkpoint_variables(D).items():
        # tf.train.Checkpoint escapes "." in dict keys as "..".
        name = key.replace(".", "..")
        var.assign(reader.get_tensor(f"D/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
    clean, _ = data.load_clean_uint8(config.data, 32, limit=32, seed=0)
    v = data.dequantize(clean, tf.constant([3, 0], tf.int64))
    expected = float(np.mean(D(v, training=False).numpy()))
    assert result["reals"]["A"] == pytest.approx(expected, abs=1e-5)
    assert result["reals"]["noise"] != pytest.approx(expected, abs=1e-6)
    assert "| A | 2 | reals + S |" in (tmp_path / "probe.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        tool.main([f"--run={run_dir}", "--conditions=Z"])
    assert exit_info.value.code == 2
    assert "unknown setting 'Z'" in capsys.readouterr().err
