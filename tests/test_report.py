"""End-to-end tests on a tiny trained run: the degradation report tool and
the `python -m bncr_tf.evaluate` command (with the random test extractor).

The run (BNCR-GAN, setting N, 2 iterations, width 8) is trained once per
module in-process (~20 s on a busy CPU).
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import data
from bncr_tf.degradations import builder
from bncr_tf.degradations import settings
from bncr_tf.metrics import evaluation
from bncr_tf.metrics import features
from bncr_tf.metrics import runner
from bncr_tf.training.config import TrainConfig
from bncr_tf.training.config import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "report_degradations.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("report_degradations", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_tool()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from bncr_tf.training import loop
    config = TrainConfig(
        data="builtin:skimage_patches", data_limit=64, setting="N",
        variant="bncrgan", width=8, d_batch=8, g_batch=8, z_dim=16,
        iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
        export_at_end=False,
        outdir=str(tmp_path_factory.mktemp("runs"))).validate_all()
    return loop.train(config)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- Degradation report ------------------------------------------------------

def test_report_writes_plots_and_summaries(tiny_run, tmp_path):
    out = tmp_path / "report"
    summary = report.make_report(tiny_run, out_dir=str(out), num_samples=300,
                                 seed=1, noise_samples=16)
    names = sorted(os.listdir(out))
    for name in ("summary.json", "summary.md", "quality.png",
                 "quality_mask.png", "entropy.png", "kernels.png",
                 "noise_std.png"):
        assert name in names
    for name in summary["plots"]:
        image = tf.io.decode_png(tf.io.read_file(str(out / name)))
        assert image.shape[-1] == 3 and image.shape[0] > 100
    with open(out / "summary.json") as f:
        stored = json.load(f)
    assert stored["step"] == 2 and stored["num_samples"] == 300
    learned, true = stored["learned"], stored["true"]
    for side in (learned, true):
        assert 0.0 <= side["blur"]["fraction_unblurred"] <= 1.0
        assert 0.0 <= side["jpeg"]["fraction_uncompressed"] <= 1.0
        std = side["noise"]["std"]
        assert len(std) == len(report.DEFAULT_INTENSITIES)
        assert all(s > 0 for s in std)
    # Setting N blurs, noises and compresses every image.
    assert true["blur"]["fraction_not_blurred"] == 0.0
    assert true["jpeg"]["fraction_uncompressed"] == 0.0
    assert 60 <= true["jpeg"]["q"]["p5"] <= true["jpeg"]["q"]["p95"] <= 100
    # True camera noise std sqrt(read + shot u) grows with intensity.
    assert np.all(np.diff(true["noise"]["std"]) > 0)
    assert "N = 64" in stored["true_source"]
    text = (out / "summary.md").read_text()
    assert "| images left unblurred" in text
    assert "![kernels](kernels.png)" in text
    # Same seed, same numbers.
    again = report.make_report(tiny_run, out_dir=str(tmp_path / "again"),
                               num_samples=300, seed=1, noise_samples=16)
    assert again["learned"] == summary["learned"]


def test_true_degradations_from_builder_metadata(tiny_run, tmp_path):
    """TFRecord metadata and regeneration with sample_params agree."""
    images, _ = data.load_clean_uint8("builtin:skimage_patches:count=24", 32)
    out_dir = str(tmp_path / "degraded")
    builder.build_degraded_dataset(images, None, "O", out_dir, seed=3,
                                   progress=False)
    base = TrainConfig(resolution=32)
    from_records, text = report.true_degradations(
        dataclasses.replace(base, data=out_dir, setting="A"), str(tmp_path),
        num_samples=24)
    assert out_dir in text
    regenerated, text2 = report.true_degradations(
        dataclasses.replace(base, data="builtin:skimage_patches",
                            data_limit=24, setting="O", data_seed=3),
        str(tmp_path), num_samples=24)
    assert "N = 24" in text2
    for key in ("kernel", "q", "noise_std", "unblurred_flag"):
        np.testing.assert_allclose(from_records[key], regenerated[key],
                                   rtol=1e-6, err_msg=key)
    # Setting O degrades a quarter of the images per stage.
    rate = settings.get_setting("O").blur_rate
    assert np.mean(~from_records["unblurred_flag"]) == pytest.approx(
        rate, abs=0.05)
    assert report.true_degradations(
        dataclasses.replace(base, setting="A"), str(tmp_path))[0] is None


def test_report_of_a_model_without_degradation_stages(tmp_path):
    """Plain GAN on blurred data: only the true side exists; nothing
    breaks and absent stages read as missing."""
    from bncr_tf import models
    config = TrainConfig(variant="gan", setting="B", width=8, z_dim=16,
                         resolution=16, data_limit=40)
    gens = models.build_generators(config)
    learned = report.learned_degradations(gens, config, num_samples=8,
                                          noise_samples=2)
    assert learned == {}
    true, text = report.true_degradations(config, str(tmp_path), 40)
    assert "setting B" in text and "N = 40" in text
    summary = {"learned": report.summarize(learned),
               "true": report.summarize(true, learned=False)}
    assert summary["learned"] == {"blur": None, "noise": None, "jpeg": None}
    assert summary["true"]["jpeg"]["fraction_uncompressed"] == 1.0
    assert max(summary["true"]["noise"]["std"]) == 0.0
    plots = report.write_plots(str(tmp_path), learned, true)
    assert "kernels.png" in plots and "quality_mask.png" not in plots
    summary.update(run_dir=str(tmp_path), checkpoint="-", step=0,
                   variant="gan", data=config.data, setting="B",
                   num_samples=8, seed=0, true_source=text,
                   entropy_threshold=0.1, mask_threshold=0.5, plots=plots)
    assert "| images left unblurred" in report.markdown(summary)


def test_report_cli_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, TOOL, f"--run_dir={tmp_path}"], env=_env(),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert lines == [f"error: {tmp_path} is not a run directory (no "
                     f"config.json)"]


# --- python -m bncr_tf.evaluate ----------------------------------------------

def test_evaluate_cli_end_to_end(tiny_run, tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "bncr_tf.evaluate",
               f"--run_dir={tiny_run}", "--extractor=random_conv",
               "--num_samples=64", "--metric=fid,kid", "--kid_subsets=5",
               "--kid_subset_size=32", "--checkpoint=all",
               f"--cache_dir={cache}"]
    proc = subprocess.run(command, env=_env(), capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best fid64" not in proc.stdout  # one checkpoint only
    assert "img/s" in proc.stderr and "ETA" in proc.stderr  # progress
    with open(os.path.join(tiny_run, "metric-fid64.jsonl")) as f:
        lines = [json.loads(l) for l in f]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["metric"] == "fid64" and rec["step"] == 2
    assert rec["checkpoint"].endswith("ckpt-2") and rec["num_samples"] == 64
    assert rec["value"] > 0 and np.isfinite(rec["value"])
    assert rec["extractor"]["name"] == "random_conv"
    assert rec["extractor"]["comparable"] is False
    assert rec["reference"]["source"].startswith("builtin:skimage_patches")
    assert rec["reference"]["num_images"] == 64
    with open(os.path.join(tiny_run, "metric-kid64.jsonl")) as f:
        kid = json.loads(f.readline())
    assert kid["subset_size"] == 32 and kid["std"] >= 0
    cached = os.listdir(cache / "reference-stats")
    assert len(cached) == 1 and cached[0].endswith(".npz")

    # In-process: same numbers, appended, reference read from the cache.
    extractor = features.make_extractor("random_conv")
    records = runner.evaluate_run(
        extractor, run_dir=tiny_run, num_samples=64, metrics=("fid",),
        cache=str(cache), progress=False, log=lambda line: None)
    assert records[0]["value"] == pytest.approx(rec["value"], rel=1e-9)
    with open(os.path.join(tiny_run, "metric-fid64.jsonl")) as f:
        assert len(f.readlines()) == 2
    assert os.listdir(cache / "reference-stats") == cached

    # The exported generator gives the same images, hence the same FID.
    from bncr_tf import export
    from bncr_tf import runs
    from bncr_tf import synthesis
    from bncr_tf import variants
    config, gens, _ = runs.load_generators(tiny_run)
    only_g_x = synthesis.Generators(G_x=gens.G_x,
                                    variant=variants.get_variant("gan"))
    written = export.export_generators(only_g_x, config.z_dim,
                                       config.resolution,
                                       str(tmp_path / "export"))
    model_dir = os.path.dirname(written[0])
    from_export = runner.evaluate_run(
        extractor, export_dir=model_dir, num_samples=64, metrics=("fid",),
        reference_spec="builtin:skimage_patches", reference_limit=64,
        cache=str(cache), metrics_dir=str(tmp_path / "m"), progress=False,
        log=lambda line: None)
    assert from_export[0]["step"] is None
    assert from_export[0]["value"] == pytest.approx(rec["value"], rel=1e-6)
    assert os.path.isfile(tmp_path / "m" / "metric-fid64.jsonl")


def test_evaluate_errors(tiny_run, tmp_path):
    extractor = features.make_extractor("random_conv")
    with pytest.raises(UserError, match="exactly one"):
        runner.evaluate_run(extractor)
    with pytest.raises(UserError, match="not a run directory"):
        runner.evaluate_run(extractor, run_dir=str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        runner.evaluate_run(extractor, run_dir=tiny_run, checkpoint="7",
                            num_samples=8, cache=str(tmp_path),
                            progress=False)
    config = dataclasses.replace(TrainConfig(), data=str(tmp_path))
    assert runner.default_reference(config)[0] == str(tmp_path)
    assert runner.checkpoint_step("/x/ckpt-120") == 120
    assert evaluation.metric_name("fid", 64) == "fid64"
