"""tools/run_comparison.py and bncr_tf.comparison (issue 18): the runs it
accepts, the median seed, the criterion line, the tables, and one tiny
resumable end-to-end run."""

import json
import types

import pytest

from bncr_tf import comparison
from conftest import load_tool


def test_parse_runs_and_bad_entries():
    assert comparison.parse_runs("N:gan:0, noise:nrgan:2") == [
        ("N", "gan", 0), ("noise", "nrgan", 2)]
    for bad in ("N:gan", "N:gan:x", "N:gan:0:1"):
        with pytest.raises(ValueError, match="SETTING:VARIANT:SEED"):
            comparison.parse_runs(bad)
    with pytest.raises(ValueError, match="empty"):
        comparison.parse_runs(",")


@pytest.mark.parametrize("runs, message", [
    ("X:gan:0", "unknown setting 'X'"),
    ("N:pambientgan:0", "unknown model 'pambientgan'"),
    ("J:brgan:0", "brgan cannot run on setting J: it models blur"),
    ("D:crgan:0", "crgan cannot run on setting D: it models jpeg"),
    ("D:nrgan:0", "nrgan cannot run on setting D"),
    ("noise:deblur_gan:0", "deblur_gan cannot run on setting noise"),
    ("A:ambientgan:0", "cannot run on the clean setting A"),
    ("A:deblock_gan:0", "cannot run on the clean setting A"),
    ("N:gan:0,N:gan:0", "N:gan:0 twice"),
])
def test_check_runs_refuses(runs, message):
    with pytest.raises(ValueError, match=message):
        comparison.check_runs(comparison.parse_runs(runs))


def test_check_runs_accepts_the_issue_list_and_the_clean_column():
    comparison.check_runs(comparison.parse_runs(comparison.COLOUR_RUNS))
    comparison.check_runs(comparison.parse_runs(
        "A:gan:0,A:bncrgan:0,A:brgan:0,N:brgan:0,N:nrgan:0"))


def test_default_runs_are_issue_18s_list():
    runs = comparison.parse_runs(comparison.COLOUR_RUNS)
    seeds = {}
    for setting, model, seed in runs:
        seeds.setdefault((setting, model), []).append(seed)
    three = [0, 1, 2]
    for s in "DJN":
        assert seeds[(s, "gan")] == three and seeds[(s, "bncrgan")] == three
        for m in ("ambientgan", "p_ambientgan", "bncrgan_noac"):
            assert seeds[(s, m)] == [0]
    assert seeds[("D", "brgan")] == [0] and seeds[("J", "crgan")] == [0]
    assert seeds[("D", "deblur_gan")] == [0]
    assert seeds[("J", "deblock_gan")] == [0]
    assert seeds[("noise", "nrgan")] == [0]
    assert len(runs) == 11 + 11 + 9 + 1
    assert not any(m in ("brgan", "crgan") for s, m, _ in runs if s == "N")


def _row(setting, model, seed, fid, **extra):
    return dict(setting=setting, variant=model, seed=seed,
                name=comparison.run_name(setting, model, seed), fid=fid,
                iterations=5, **extra)


def test_median_run():
    rows = [_row("N", "gan", 0, 10.0), _row("N", "gan", 1, 14.0),
            _row("N", "gan", 2, 12.0)]
    assert comparison.median_run(rows)["seed"] == 2
    # Even count: the lower middle run; ties broken by seed.
    assert comparison.median_run(rows[:2])["seed"] == 0
    tied = [_row("N", "gan", 3, 5.0), _row("N", "gan", 1, 5.0),
            _row("N", "gan", 2, 9.0)]
    assert comparison.median_run(tied)["seed"] == 3


def test_criterion_line():
    rows = [_row("N", "gan", 0, 10.0), _row("N", "gan", 1, 30.0),
            _row("N", "gan", 2, 20.0), _row("N", "bncrgan", 0, 1.0)]
    # Median GAN seed: 20.00; bound 1.5 x 12 + 2 = 20 -> holds (<=).
    c = comparison.criterion(rows, {"N": 12.0, "clean": 1.0})
    assert c["satisfied"] and c["run"] == "gan-N-s2" and c["bound"] == 20.0
    line = comparison.criterion_line(c)
    assert "FID(GAN) = 20.00 (gan-N-s2" in line
    assert "<= 1.5 × 12.00 + 2 = 20.00: satisfied." in line
    c = comparison.criterion(rows, {"N": 11.9, "clean": 1.0})
    assert not c["satisfied"]
    assert "> 1.5 × 11.90 + 2 = 19.85: NOT satisfied." in \
        comparison.criterion_line(c)
    # No GAN on N, or N not degraded: not evaluated.
    assert comparison.criterion(rows[3:], {"N": 12.0}) is None
    assert comparison.criterion(rows, {"D": 12.0}) is None
    assert "not evaluated" in comparison.criterion_line(None)


def test_tables_median_seeds_flags_and_grids():
    rows = [_row("N", "gan", 0, 10.0, seconds=60.0, grid="runs/a.png"),
            _row("N", "gan", 1, 30.0), _row("N", "gan", 2, 20.0),
            _row("D", "brgan", 0, 7.0),
            _row("noise", "nrgan", 0, 3.0)]
    data_fids = {"clean": 0.5, "N": 15.0, "D": 4.0, "noise": 2.0}
    lines = comparison.fid_table(rows, data_fids, seeds="median")
    # Columns in the settings' order, not alphabetical.
    assert lines[0] == "| model | (D) | (N) | (noise) |"
    assert "| GAN | – | 20.00 (s2; all 10.00, 30.00, 20.00) | – |" in lines
    assert "| BR-GAN | 7.00 | – | – |" in lines
    assert "| NR-GAN (camera prior) | – | – | 3.00 |" in lines
    assert "| *degraded training images* | *4.00* | *15.00* | *2.00* |" \
        in lines
    stats_row = {"label": "training images, clean", "num_images": 9,
                 "stats": {n: {"median": 1.0, "p10": 0.5, "p90": 2.0}
                           for n in ("noise", "sharpness", "blockiness")}}
    summary = {
        "args": dict(data="builtin:x", resolution=32, reference="builtin:y",
                     reference_seed=1, iterations=5, width=8, d_batch=8,
                     g_batch=8, lr=2e-4, ema_decay=0.99,
                     train_flags="--r1_weight=1 --residual_factor=1"),
        "rows": rows, "data_fids": data_fids, "num_train_images": 64,
        "fid_samples": 64, "extractor": {"name": "alexnet_imagenet_relu5"},
        "criterion": comparison.criterion(rows, data_fids),
        "stats_rows": [stats_row]}
    text = comparison.full_table(summary)
    assert "`--r1_weight=1 --residual_factor=1`" in text.split("| model")[0]
    assert "**not Inception FID**" in text
    assert "FID(GAN) = 20.00" in text and "NOT satisfied" not in text
    assert "| training images, clean | 9 | 1.00 (0.50–2.00) |" in text
    assert "| gan-N-s0 | 5 | 1.0 min | 10.00 | runs/a.png |" in text
    assert "| gan-N-s1 | 5 | – | 30.00 | – |" in text


def test_fmnist_table_keeps_experiment_2s_format():
    rows = [_row("N", "gan", 0, 10.0, seconds=60.0),
            _row("N", "gan", 1, 14.0)]
    data_fids = {"clean": 0.5, "N": 20.0}
    lines = comparison.fmnist_table(
        rows, data_fids, {"test_accuracy": 0.9156}).splitlines()
    assert "| GAN | 12.00 (10.00, 14.00) |" in lines
    assert lines[5] == ("Clean training images: FID 0.50 (the floor). "
                        "Feature classifier test accuracy: 91.56 %.")
    assert "| gan-N-s0 | 5 | 1.0 min | 10.00 |" in lines
    # Other features: their label, not an accuracy.
    text = comparison.fmnist_table(rows, data_fids, None,
                                   {"name": "vgg16_imagenet_relu5_3"})
    assert "`vgg16_imagenet_relu5_3` features: **not Inception FID**" \
        in text and "accuracy" not in text


def test_train_commands():
    args = types.SimpleNamespace(
        data="builtin:skimage_patches:count=4096", data_limit=0,
        resolution=32, width=32, d_batch=32, g_batch=64, iterations=1500,
        lr=2e-4, ema_decay=0.99, log_every=100, checkpoint_every=500,
        train_flags="--r1_weight=1 --noise_prior=poisson")
    cmd = comparison.train_command("noise", "nrgan", 0, args, "/o/runs")
    assert "--variant=nrgan_si1" in cmd and "--setting=noise" in cmd
    # The user's flags come last, so they override the model's.
    assert cmd.index("--noise_prior=camera") < cmd.index(
        "--noise_prior=poisson")
    assert cmd[-2:] == ["--r1_weight=1", "--noise_prior=poisson"]
    assert "--run_name=nrgan-noise-s0" in cmd and "--resume=auto" in cmd
    cmd = comparison.train_command("J", "deblock_gan", 1, args, "/o/runs")
    assert "--data=/o/data/J_deblock" in cmd and "--setting=A" in cmd
    assert "--variant=gan" in cmd and "--seed=1" in cmd
    cmd = comparison.train_command("N", "p_ambientgan", 0, args, "/o/runs")
    assert "--variant=p_ambientgan" in cmd


def test_wall_time_adds_sessions(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    assert comparison.wall_seconds(str(tmp_path), "gan-N-s0") is None
    comparison._add_session(str(logs), "gan-N-s0", 60.0)
    comparison._add_session(str(logs), "gan-N-s0", 30.5)
    assert comparison.wall_seconds(str(tmp_path), "gan-N-s0") == 90.5


def test_bad_input_stops_before_any_work(tmp_path, capsys):
    tool = load_tool("run_comparison")
    out = tmp_path / "cmp"
    assert tool.main([f"--out={out}", "--runs=J:brgan:0"]) == 2
    assert "brgan cannot run on setting J" in capsys.readouterr().err
    assert tool.main([f"--out={out}", "--runs=N:gan:0",
                      "--fid_samples=0"]) == 2
    assert "--fid_samples must be >= 1" in capsys.readouterr().err
    assert tool.main([f"--out={out}", "--runs=N:gan:0",
                      "--train_flags=--r1_weight=1 --no_such_flag=3"]) == 2
    err = capsys.readouterr().err
    assert "gan-N-s0" in err and "no_such_flag" in err
    assert not out.exists()


@pytest.mark.slow
def test_end_to_end_resumes_and_caches(tmp_path, capsys):
    """Two 2-step runs on 64 patches, random_conv features: scores, the
    data rows and the criterion; a rerun keeps everything; more
    iterations resume the runs and rescore them. Features other than the
    default (alexnet_imagenet) write files of their own."""
    tool = load_tool("run_comparison")
    out = tmp_path / "cmp"
    argv = [f"--out={out}", "--runs=N:gan:0,N:bncrgan:0", "--iterations=2",
            "--log_every=1", "--checkpoint_every=2", "--width=8",
            "--d_batch=8", "--g_batch=8", "--fid_samples=64",
            "--data=builtin:skimage_patches:count=64",
            "--reference=builtin:skimage_patches:count=64",
            "--extractor=random_conv", "--jobs=2",
            "--train_flags=--z_dim=16 --r1_weight=1"]
    assert tool.main(argv) == 0
    summary = json.loads((out / "summary-random_conv.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ["gan-N-s0",
                                                    "bncrgan-N-s0"]
    assert all(r["iterations"] == 2 and r["fid"] > 0 and r["seconds"] > 0
               and (out / r["grid"]).is_file() for r in summary["rows"])
    # Other patches of the same photos are far closer to the reference
    # than two-step generators.
    assert summary["data_fids"]["clean"] < min(
        r["fid"] for r in summary["rows"])
    assert summary["criterion"]["run"] == "gan-N-s0"
    assert summary["criterion"]["bound"] == pytest.approx(
        1.5 * summary["data_fids"]["N"] + 2)
    labels = [r["label"] for r in summary["stats_rows"]]
    assert labels == ["training images, clean",
                      "training images, setting N",
                      "G_x of GAN, N, seed 0", "G_x of BNCR-GAN, N, seed 0"]
    assert all(r["num_images"] == 64 for r in summary["stats_rows"])
    assert not (out / "summary.json").exists()
    assert (out / summary["rows"][0]["run_dir"] / "fid-random_conv.json"
            ).is_file()
    table = (out / "table-random_conv.md").read_text()
    assert "`--z_dim=16 --r1_weight=1`" in table
    assert "Issue 18 criterion (setting N)" in table
    capsys.readouterr()

    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already trained") == 2
    assert printed.count("(cached)") == 2
    again = json.loads((out / "summary-random_conv.json").read_text())
    assert [r["fid"] for r in again["rows"]] == [
        r["fid"] for r in summary["rows"]]

    argv[2] = "--iterations=3"
    assert tool.main(argv + ["--runs=N:gan:0"]) == 0
    printed = capsys.readouterr().out
    assert "(cached)" not in printed and "already trained" not in printed
    third = json.loads((out / "summary-random_conv.json").read_text())
    assert third["rows"][0]["iterations"] == 3
    assert third["rows"][0]["seconds"] > summary["rows"][0]["seconds"]
