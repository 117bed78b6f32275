"""The trainer: configs, entry point, runs of every variant, resume, NaN guard,
mixed precision and MirroredStrategy."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from bncr_tf import runs
from bncr_tf import train as train_cli
from bncr_tf import variants
from bncr_tf.training import loop
from bncr_tf.training.config import TrainConfig
from bncr_tf.training.config import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.flags"),
                           recursive=True))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def tiny(outdir, **kw):
    """A tiny run: 64 patches, narrow nets, no export."""
    values = dict(data="builtin:skimage_patches", data_limit=64, setting="N",
                  variant="bncrgan", width=8, d_batch=8, g_batch=8, z_dim=16,
                  iterations=2, log_every=1, grid_every=2, checkpoint_every=2,
                  export_at_end=False, outdir=str(outdir), resume="none")
    values.update(kw)
    return TrainConfig(**values).validate_all()


def parse_flagfile(path):
    """Parses a flagfile with fresh FlagValues, as the entry point does."""
    fv = flags.FlagValues()
    train_cli.define_flags(fv)
    cwd = os.getcwd()
    os.chdir(ROOT)  # nested --flagfile paths are relative to the repo root
    try:
        fv(["train", f"--flagfile={path}"])
    finally:
        os.chdir(cwd)
    return train_cli.config_from_flags(fv)


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


# --- Configs and entry point --------------------------------------------------

def test_configs_exist_for_every_table():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs"))
             for p in CONFIGS}
    assert "demo.flags" in names and "ffhq.flags" in names
    for table in ("table1_blur", "table1_jpeg", "table2", "table3_ffhq"):
        assert any(n.startswith(table + "/") for n in names), table
    assert "table2/bncrgan_N.flags" in names
    assert "table3_ffhq/bncrgan_P.flags" in names


def test_generated_configs_are_up_to_date():
    out = subprocess.run([sys.executable, "tools/make_configs.py", "--check"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", CONFIGS,
                         ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_every_config_parses_and_validates(path):
    config = parse_flagfile(path)
    if "/table" in path:
        assert config.variant in variants.VARIANTS
        model, setting = os.path.basename(path)[:-6].rsplit("_", 1)
        restore = {"deblur_gan": "deblur_gt",
                   "deblock_gan": "deblock"}.get(model)
        if restore:
            # Restoration baselines: a plain GAN on a restored set that is
            # already degraded (make_degraded_dataset.py --restore).
            assert config.variant == "gan" and config.setting == "A"
            assert config.data.endswith(f"_{setting}_{restore}")
        else:
            assert config.setting.endswith(setting)


def test_ffhq_config_resolves_to_the_paper_setting():
    config = parse_flagfile("configs/ffhq.flags")
    assert (config.variant, config.setting, config.resolution) == (
        "bncrgan", "ffhq_P", 128)
    assert config.resolved_kernel_size() == 11
    assert (config.lr, config.beta1, config.beta2) == (2e-4, 0.0, 0.99)
    assert (config.d_batch, config.g_batch, config.iterations) == (
        64, 128, 200_000)


def test_cli_dry_run_and_one_line_errors():
    out = subprocess.run(
        [sys.executable, "-m", "bncr_tf.train", "--flagfile=configs/ffhq.flags",
         "--dry_run"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout[out.stdout.index("{"):])
    assert resolved["setting"] == "ffhq_P" and resolved["resolution"] == 128
    bad = subprocess.run(
        [sys.executable, "-m", "bncr_tf.train", "--resolution=48",
         "--dry_run"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2
    assert "error: --resolution must be a power of two" in bad.stderr


def test_helpfull_documents_every_flag():
    out = subprocess.run([sys.executable, "-m", "bncr_tf.train",
                          "--helpfull"], cwd=ROOT, capture_output=True,
                         text=True, env=ENV)
    import dataclasses
    for field in dataclasses.fields(TrainConfig):
        assert (f"--{field.name}:" in out.stdout
                or f"--[no]{field.name}:" in out.stdout), field.name


@pytest.mark.parametrize("kw,message", [
    (dict(resolution=48), "power of two"),
    (dict(g_batch=7), "even"),
    (dict(kernel_size=6), "odd"),
    (dict(variant="bncr"), "unknown model variant"),
    (dict(setting="Z"), "Z"),
    (dict(noise_prior="gauss"), "--noise_prior"),
])
def test_config_validation_messages(kw, message, tmp_path):
    with pytest.raises(UserError, match=message):
        tiny(tmp_path, **kw)


# --- Training runs ------------------------------------------------------------

def _assert_run_outputs(run_dir, steps):
    names = os.listdir(run_dir)
    for name in ("config.json", "config.flags", "log.txt", "stats.jsonl",
                 "checkpoints", "grids", "tb"):
        assert name in names, name
    assert os.path.exists(os.path.join(run_dir, "grids", "reals.png"))
    assert os.path.exists(os.path.join(run_dir, "grids",
                                       f"fakes-{steps:07d}.png"))
    assert glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*"))
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["step"] == steps
    assert np.isfinite(records[-1]["Loss/D/loss"])
    assert runs.checkpoint_path(run_dir).endswith(f"ckpt-{steps}")


@pytest.mark.parametrize("resolution", [32, 128])
@pytest.mark.parametrize("variant", sorted(variants.VARIANTS))
def test_every_variant_trains_and_writes_its_run(variant, resolution,
                                                 tmp_path, eager):
    setting = "N" if resolution == 32 else "ffhq_P"
    run_dir = loop.train(tiny(tmp_path, variant=variant, resolution=resolution,
                              setting=setting, data_limit=16))
    _assert_run_outputs(run_dir, 2)


def test_checkpoint_holds_every_weight(tmp_path):
    """Every variable of every network (raw and EMA) is in the checkpoint,
    and restoring gives the in-memory EMA generator."""
    run_dir = loop.train(tiny(tmp_path))
    config, gens, path = runs.load_generators(run_dir)
    stored = dict(tf.train.list_variables(path))
    for name, model in gens.models().items():
        for suffix in ("", "_ema"):
            n = sum(1 for k in stored if k.startswith(f"{name}{suffix}/"))
            assert n == len(model.variables), (name + suffix, n)
    assert sum(1 for k in stored if k.startswith("D/")) > 20


def _all_tensors(path):
    from bncr_tf.training import checkpoints
    return {name: value
            for name, value in checkpoints.read_tensors(path).items()
            if not name.startswith("save_counter")}


def test_resume_equals_uninterrupted_run(tmp_path):
    """2 steps, stop, resume to 4 == 4 uninterrupted steps (compiled steps,
    op determinism): weights, EMA, optimiser state and counters."""
    tf.config.experimental.enable_op_determinism()
    a = tiny(tmp_path / "a", iterations=2, run_name="r", deterministic=True)
    loop.train(a)
    import dataclasses
    run_a = loop.train(dataclasses.replace(a, iterations=4, resume="auto"))
    run_b = loop.train(tiny(tmp_path / "b", iterations=4, run_name="r",
                            deterministic=True))
    assert os.path.basename(run_a) == os.path.basename(run_b)
    ta = _all_tensors(runs.checkpoint_path(run_a))
    tb = _all_tensors(runs.checkpoint_path(run_b))
    assert set(ta) == set(tb)
    for name in ta:
        if "iterations" in name or name.startswith("step"):
            assert ta[name] == tb[name], name
        else:
            np.testing.assert_allclose(ta[name], tb[name], rtol=1e-5,
                                       atol=1e-6, err_msg=name)
    step = [k for k in ta if k.startswith("step")][0]
    assert ta[step] == 4
    assert any("opt_G/_iterations" in k and ta[k] == 4 for k in ta)
    with open(os.path.join(run_a, "log.txt")) as f:
        assert "restored" in f.read()


def test_resume_refuses_a_changed_model(tmp_path):
    import dataclasses
    config = tiny(tmp_path, run_name="r")
    loop.train(config)
    with pytest.raises(UserError, match="width"):
        loop.train(dataclasses.replace(config, width=16, resume="auto"))


def test_injected_nan_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = loop.make_real_batches

    def poisoned(images, batch, seed, start_step):
        ds = real(images, batch, seed, start_step)
        steps = tf.data.Dataset.range(start_step, 2 ** 62)
        return tf.data.Dataset.zip((ds, steps)).map(
            lambda x, s: tf.where(s >= 3, np.nan, x))

    monkeypatch.setattr(loop, "make_real_batches", poisoned)
    config = tiny(tmp_path, iterations=6, checkpoint_every=2)
    with pytest.raises(loop.NonFiniteError) as err:
        loop.train(config)
    message = str(err.value)
    assert "non-finite values at step 3" in message
    assert "ckpt-2" in message
    run_dir = glob.glob(os.path.join(str(tmp_path), "*"))[0]
    _, gens, path = runs.load_generators(run_dir)
    assert path.endswith("ckpt-2")
    x = gens.G_x(tf.random.normal([2, 16]))
    assert np.isfinite(x.numpy()).all()


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_on_cpu(policy, tmp_path, float32_policy):
    from bncr_tf.training import steps
    config = tiny(tmp_path, mixed_precision=policy)
    loop.setup_tensorflow(config)
    trainer = steps.Trainer(config, tf.distribute.get_strategy())
    reals = tf.random.uniform([8, 32, 32, 3], -1, 1)
    for step in range(2):
        values = trainer.train_iteration(reals, step)
        assert all(np.isfinite(v.numpy()) for v in values.values())
    for v in trainer.gens.trainable_variables() + (
            trainer.D.trainable_variables):
        assert v.dtype == "float32", v.path
    assert trainer.D.compute_dtype == policy.split("_")[1]


def test_r1_inputs_image_changes_only_the_penalty(tmp_path):
    """--r1_inputs=image: the same first D step gives the same logistic
    loss (the logits do not change) and a smaller R1 (the penalty no
    longer sees the high-pass path). The network-level test checks the
    gradients themselves against numpy."""
    from bncr_tf.training import steps
    reals = tf.random.stateless_uniform([8, 32, 32, 3], [3, 4], -1, 1)
    out = {}
    for inputs in ("all", "image"):
        config = tiny(tmp_path, variant="gan", d_highpass=20.0,
                      r1_inputs=inputs)
        tf.keras.utils.set_random_seed(0)
        trainer = steps.Trainer(config, tf.distribute.get_strategy())
        values = trainer.train_iteration(reals, 0)
        out[inputs] = {k: float(v) for k, v in values.items()}
    assert abs(out["all"]["Loss/D/loss"]
               - out["image"]["Loss/D/loss"]) < 1e-6
    assert out["image"]["Loss/D/r1"] < 0.9 * out["all"]["Loss/D/r1"], out
    with pytest.raises(Exception, match="r1_inputs"):
        tiny(tmp_path, r1_inputs="highpass")


MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bncr_tf.training import loop, steps
    from bncr_tf.training.config import TrainConfig
    config = TrainConfig(variant="gan", width=8, d_batch=8, g_batch=8,
                         z_dim=16)
    reals = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2], -1, 1)
    out = {}
    for kind in ("default", "mirrored"):
        strategy = loop.make_strategy(kind)
        with strategy.scope():
            tf.keras.utils.set_random_seed(0)
            trainer = steps.Trainer(config, strategy)
        batch = next(iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(reals))))
        values = trainer.train_iteration(batch, 0)
        weights = trainer.D.trainable_variables[0].numpy()
        out[kind] = ({k: float(v) for k, v in values.items()}, weights,
                     strategy.num_replicas_in_sync)
    (a, wa, na), (b, wb, nb) = out["default"], out["mirrored"]
    assert (na, nb) == (1, 2), (na, nb)
    for k in ("Loss/D/loss", "Loss/D/r1", "Loss/G/adv"):
        assert abs(a[k] - b[k]) < 1e-4 * max(1, abs(a[k])), (k, a[k], b[k])
    assert np.allclose(wa, wb, atol=1e-6), np.abs(wa - wb).max()
    print("MIRRORED_OK", a["Loss/D/loss"], b["Loss/D/loss"])
""")


def test_mirrored_strategy_on_two_cpus_matches_single_device():
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, env=ENV)
    assert "MIRRORED_OK" in out.stdout, out.stdout + out.stderr[-3000:]


def test_steps_are_traced_once(tmp_path):
    from bncr_tf.training import steps
    config = tiny(tmp_path)
    trainer = steps.Trainer(config, tf.distribute.get_strategy())
    reals = tf.random.uniform([8, 32, 32, 3], -1, 1)
    for step in range(3):
        trainer.train_iteration(reals, step)
    assert trainer._iteration.experimental_get_tracing_count() == 1


def test_flag_reference_is_up_to_date():
    out = subprocess.run([sys.executable, "tools/make_flag_docs.py",
                          "--check"], cwd=ROOT, capture_output=True,
                         text=True, env=ENV)
    assert out.returncode == 0, out.stderr


def test_fid_every_appends_metrics_and_keeps_the_best(tmp_path):
    config = tiny(tmp_path, iterations=4, fid_every=2, fid_samples=32,
                  fid_extractor="random_conv")
    run_dir = loop.train(config)
    with open(os.path.join(run_dir, "metric-fid32.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [2, 4]
    assert all(np.isfinite(r["value"]) and r["value"] > 0 for r in records)
    best = min(records, key=lambda r: r["value"])["step"]
    kept = tf.train.latest_checkpoint(
        os.path.join(run_dir, "checkpoints", "best"))
    assert kept.endswith(f"best-{best}")


MULTIWORKER_SCRIPT = textwrap.dedent("""
    import json, os, socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}"]},
        "task": {"type": "worker", "index": 0}})
    import numpy as np
    import tensorflow as tf
    from bncr_tf.training import loop
    from bncr_tf.training.config import TrainConfig
    # As in loop.train: the strategy first, then modules that create ops.
    strategy = loop.make_strategy("multiworker")
    from bncr_tf.training import steps
    config = TrainConfig(variant="gan", width=8, d_batch=8, g_batch=8,
                         z_dim=16)
    with strategy.scope():
        trainer = steps.Trainer(config, strategy)
    reals = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2], -1, 1)
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(reals))))
    values = trainer.train_iteration(batch, 0)
    assert np.isfinite(float(values["Loss/D/loss"]))
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    print("MULTIWORKER_OK", strategy.num_replicas_in_sync)
""")


def test_multiworker_strategy_from_tf_config():
    """One worker on the loopback address: the TF_CONFIG code path."""
    out = subprocess.run([sys.executable, "-c", MULTIWORKER_SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert "MULTIWORKER_OK 1" in out.stdout, (
        out.stdout + out.stderr[-3000:])


def test_multiworker_without_tf_config_is_one_sentence(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        loop.make_strategy("multiworker")


def test_configs_written_before_a_field_existed_keep_their_meaning(tmp_path):
    """A config.json without the fields added later (issue 14) loads with
    the behaviour of its time: q_min 0 (G_q's range was [0, 100]) and the
    new switches off; resuming such a run is not refused for them."""
    import dataclasses
    import json
    from bncr_tf import runs
    from bncr_tf.training import loop
    config = TrainConfig(iterations=5)
    stored = json.loads(config.to_json())
    for name in ("q_min", "fake_storage", "centre_kernels",
                 "degradation_warmup", "degradation_lr_scale"):
        stored.pop(name)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    loaded = runs.load_config(str(tmp_path))
    assert loaded.q_min == 0.0 and config.q_min == 20.0
    assert not loaded.fake_storage and loaded.degradation_lr_scale == 1.0
    loop.check_resume_config(str(tmp_path), dataclasses.replace(
        config, q_min=0.0))
    with pytest.raises(loop.UserError, match="q_min"):
        loop.check_resume_config(str(tmp_path), config)
