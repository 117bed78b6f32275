"""tools/measure_degradation_stats.py end to end on a tiny run trained here
(GAN, setting H, 2 iterations, width 8): every row is recomputed
independently from the data pipeline, the degradation builder and the
run's generators, and bad inputs give one `error:` line."""

import json

import numpy as np
import pytest

from conftest import load_tool

from bncr_tf import data
from bncr_tf import runs
from bncr_tf.degradations import builder
from bncr_tf.metrics import degradation_stats as ds
from bncr_tf.metrics import evaluation
from bncr_tf.training.config import TrainConfig

tool = load_tool("measure_degradation_stats")
DATA = "builtin:skimage_patches:count=48"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from bncr_tf.training import loop
    config = TrainConfig(
        data="builtin:skimage_patches", data_limit=48, setting="H",
        variant="gan", width=8, d_batch=8, g_batch=8, z_dim=16,
        iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
        export_at_end=False,
        outdir=str(tmp_path_factory.mktemp("runs"))).validate_all()
    return loop.train(config)


def test_tool_end_to_end(tiny_run, tmp_path, capsys):
    out = tmp_path / "stats"
    code = tool.main([f"--runs={tiny_run}", "--settings=H,B",
                      "--num_samples=20", "--seed=5", "--batch=8",
                      f"--out={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "degradation_stats.json").read_text())
    table = (out / "degradation_stats.md").read_text()
    assert table in printed
    # Defaults from the run: its data, limit, seed and resolution.
    assert result["data"] == "builtin:skimage_patches"
    assert result["num_data_images"] == 48 and result["resolution"] == 32
    # Degraded as training degraded the run's data: with its data seed.
    assert result["degrade_seed"] == result["data_seed"] == 0
    labels = [row["label"] for row in result["rows"]]
    assert labels[:3] == ["data, clean (A)", "data, setting H",
                          "data, setting B"]
    assert labels[3].startswith("G_x of ") and "(gan, H, step 2)" in labels[3]

    # Independent recomputation of every row.
    config = runs.load_config(tiny_run)
    clean, _ = data.load_clean_uint8(config.data, 32, limit=48,
                                     seed=config.data_seed)
    _, gens, _ = runs.load_generators(tiny_run)
    generated = np.concatenate(list(evaluation.generated_images(
        gens, 20, seed=5, batch_size=7)))
    expected = {"data, clean (A)": clean}
    for name in ("H", "B"):
        expected[f"data, setting {name}"] = builder.degrade_chunk(
            name, clean, 0, 48, config.data_seed)[0]
    expected[labels[3]] = generated
    clean_stats = ds.per_image_stats(clean)
    for row in result["rows"]:
        images = expected[row["label"]]
        assert row["num_images"] == len(images)
        per_image = ds.per_image_stats(images)
        for name in ds.STATS:
            values = per_image[name]
            assert row["stats"][name]["median"] == pytest.approx(
                float(np.nanmedian(values)), rel=1e-12, abs=1e-12), name
            if row["kind"] != "data":
                assert row["separability_from_clean"][name] == \
                    pytest.approx(ds.separability(clean_stats[name], values))
    # JPEG 60-80 raises blockiness, the disk blur lowers sharpness.
    stats = {row["label"]: row["stats"] for row in result["rows"]}
    assert (stats["data, setting H"]["blockiness"]["median"]
            > stats["data, clean (A)"]["blockiness"]["median"])
    assert (stats["data, setting B"]["sharpness"]["median"]
            < stats["data, clean (A)"]["sharpness"]["median"])
    assert "| data, setting H | 48 |" in table


def test_tool_default_settings_and_explicit_data(tiny_run, tmp_path,
                                                 capsys):
    out = tmp_path / "stats"
    assert tool.main([f"--runs={tiny_run}", f"--data={DATA}",
                      "--limit=16", "--num_samples=4",
                      f"--out={out}"]) == 0
    capsys.readouterr()
    result = json.loads((out / "degradation_stats.json").read_text())
    assert result["settings"] == ["H"]  # the run's setting
    assert result["num_data_images"] == 16
    assert [r["kind"] for r in result["rows"]] == ["data", "degraded",
                                                   "generated"]


@pytest.mark.parametrize("args, message", [
    (["--runs={missing}"], "is not a run directory"),
    (["--runs={empty}"], "has no checkpoint"),
    (["--runs={run}", "--checkpoint=99"], "does not exist"),
    (["--data=" + DATA, "--settings=Z"], "unknown setting 'Z'"),
    (["--data=builtin:nothing"], "builtin"),
    ([], "give --data or at least one run"),
])
def test_tool_one_line_errors(tiny_run, tmp_path, capsys, args, message):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with open(f"{tiny_run}/config.json") as f:
        (empty / "config.json").write_text(f.read())
    args = [a.format(missing=tmp_path / "nope", empty=empty, run=tiny_run)
            for a in args]
    assert tool.main(args + [f"--out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert message in err[0]
    assert not (tmp_path / "out").exists()


def test_evaluate_cli_with_imagenet_features(tiny_run, tmp_path):
    """`python -m bncr_tf.evaluate --extractor=efficientnet_lite0_imagenet`
    on the tiny run: labelled not comparable, and the value equals the
    Fréchet distance recomputed here from the generated and reference
    images (lives here because this module trains a run)."""
    import os
    import subprocess
    import sys
    from bncr_tf.metrics import features
    from bncr_tf.metrics import fid
    from bncr_tf.pretrained import weights as weights_lib
    reason = weights_lib.missing_reason("efficientnet_lite0")
    if reason:
        pytest.skip(reason)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    metrics_dir = tmp_path / "metrics"
    proc = subprocess.run(
        [sys.executable, "-m", "bncr_tf.evaluate", f"--run_dir={tiny_run}",
         "--extractor=efficientnet_lite0_imagenet", "--num_samples=16",
         "--reference_limit=16", "--seed=3", f"--cache_dir={tmp_path}",
         f"--metrics_dir={metrics_dir}"],
        env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not comparable with published numbers" in proc.stdout
    rec = json.loads((metrics_dir / "metric-fid16.jsonl").read_text()
                     .splitlines()[0])
    assert rec["extractor"]["name"] == "efficientnet_lite0_imagenet"
    assert rec["extractor"]["comparable"] is False
    ex = features.make_extractor("efficientnet_lite0_imagenet")
    config = runs.load_config(tiny_run)
    reference, _ = data.load_clean_uint8(config.data, 32, limit=16,
                                         seed=config.data_seed)
    _, gens, _ = runs.load_generators(tiny_run)
    generated = np.concatenate(list(evaluation.generated_images(
        gens, 16, seed=3, batch_size=16)))
    mu1, s1 = fid.feature_statistics(ex(generated))
    mu2, s2 = fid.feature_statistics(ex(reference))
    assert rec["value"] == pytest.approx(
        fid.frechet_distance(mu1, s1, mu2, s2), rel=1e-4)
