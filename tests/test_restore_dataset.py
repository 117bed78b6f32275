"""Tests of restored training sets (make_degraded_dataset.py --restore).

The restored set must (a) hold, for every image the setting degraded, the
restoration of the plain degraded image of the same index and otherwise
that image unchanged, (b) keep every metadata field of the plain degraded
set, (c) be read by the training data path (`load_training_images`), and
(d) be closer to the clean images than the degraded set (mean PSNR over the
changed images; deconvolution with the true kernel gains several dB,
deblocking a little). Bad combinations stop the CLI with exit status 2 and
one sentence.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import data
from bncr_tf.baselines import deblocking, deconvolution
from bncr_tf.baselines import restore as restore_lib
from bncr_tf.degradations import builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 48


@pytest.fixture(scope="module")
def clean():
    images, _ = data.load_clean_uint8(f"builtin:skimage_patches:count={N}",
                                      32, seed=7)
    return images


def _psnr(a, b):
    return float(tf.reduce_mean(tf.image.psnr(
        tf.cast(a, tf.float32), tf.cast(b, tf.float32), 255.0)))


def _build(clean, out, setting, restore):
    fn = info = None
    if restore:
        def fn(degraded, params):
            return restore_lib.restore_images(restore, degraded, params)
        info = {"name": restore, **restore_lib.describe(restore)}
    return builder.build_degraded_dataset(
        clean, None, setting, str(out), seed=1, chunk_size=20,
        progress=False, restore=fn, restore_info=info)


@pytest.mark.parametrize("setting,restore", [("F", "deblur_gt"),
                                             ("L", "deblock")])
def test_restored_set_keeps_metadata_and_restores(clean, tmp_path, setting,
                                                  restore):
    _build(clean, tmp_path / "plain", setting, None)
    summary = _build(clean, tmp_path / "restored", setting, restore)
    assert summary["restore"]["name"] == restore
    plain = data.read_degraded_records(str(tmp_path / "plain"))
    restored = data.read_degraded_records(str(tmp_path / "restored"))
    assert set(plain) == set(restored)
    for key in plain:
        if key != "image":
            np.testing.assert_array_equal(plain[key], restored[key], key)
    if restore == "deblur_gt":
        hit = plain["blur_type"] != "none"
        expected = np.empty_like(plain["image"][hit])
        for kind in ("disk", "motion"):
            sel = plain["blur_type"][hit] == kind
            expected[sel] = deconvolution.deblur(
                plain["image"][hit][sel], plain["kernel"][hit][sel],
                lam=deconvolution.default_lambda(kind, 7))
    else:
        hit = plain["jpeg_quality"] > 0
        expected = deblocking.deblock(plain["image"][hit],
                                      plain["jpeg_quality"][hit])
    assert 0 < hit.sum() < N  # a partial setting: both kinds present
    np.testing.assert_array_equal(restored["image"][hit], expected)
    np.testing.assert_array_equal(restored["image"][~hit],
                                  plain["image"][~hit])
    changed = hit & np.any(plain["image"] != clean, axis=(1, 2, 3))
    gain = (_psnr(clean[changed], restored["image"][changed])
            - _psnr(clean[changed], plain["image"][changed]))
    assert gain > (2.0 if restore == "deblur_gt" else 0.0), gain


def test_training_data_path_reads_restored_set(clean, tmp_path):
    from bncr_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
    from bncr_tf.training import loop  # pylint: disable=import-outside-toplevel
    out = tmp_path / "restored"
    _build(clean, out, "B", "deblur_gt")
    config = dataclasses.replace(config_lib.TrainConfig(), data=str(out),
                                 setting="A", resolution=32, d_batch=16)
    images = loop.load_training_images(config)
    records = data.read_degraded_records(str(out))
    assert images.shape == (N, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, records["image"])


def _cli(args, tmp_path):
    src = tmp_path / "clean.npy"
    if not src.exists():
        np.save(src, np.zeros((8, 32, 32, 3), np.uint8))
    cmd = [sys.executable, os.path.join(REPO, "tools",
                                        "make_degraded_dataset.py"),
           f"--source=npy:{src}", "--resolution=32",
           f"--out_dir={tmp_path / 'out'}", "--log_every=0.001"] + args
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_cli_restores_and_rejects_bad_combinations(tmp_path):
    res = _cli(["--setting=H", "--restore=deblock"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "degrade+restore H" in res.stderr and "img/s" in res.stderr
    with open(tmp_path / "out" / "summary.json") as f:
        assert json.load(f)["restore"]["name"] == "deblock"
    res = _cli(["--setting=H", "--restore=deblur_gt", "--overwrite"],
               tmp_path)
    assert res.returncode == 2
    assert "deblur_gt needs a setting with blur" in res.stderr
    res = _cli(["--setting=B", "--restore=deblock", "--overwrite"], tmp_path)
    assert res.returncode == 2
    assert "deblock needs a setting with JPEG" in res.stderr
    assert "Traceback" not in res.stderr
