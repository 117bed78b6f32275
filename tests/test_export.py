"""TF Serving export: layout, versions, signatures, warm-up, round trip.

One tiny BNCR-GAN run (2 iterations, width 8, z_dim 16, 32 px) is trained
once per module with `export_at_end`, so version 1 of every model comes from
the trainer's `export.export_run`; the CLI then writes version 2.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from bncr_tf import export
from bncr_tf import models
from bncr_tf import runs
from bncr_tf import synthesis
from bncr_tf.training.config import TrainConfig
from bncr_tf.training.config import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z_DIM, RES, K = 16, 32, 7
ALL_MODELS = ["generator", "blur_kernel", "noise", "quality", "degrade"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SAVED_MODEL_CLI = ([shutil.which("saved_model_cli")]
                   if shutil.which("saved_model_cli") else
                   [sys.executable, "-m",
                    "tensorflow.python.tools.saved_model_cli"])


def _tiny(variant="bncrgan", **kw):
    return TrainConfig(data="builtin:skimage_patches", data_limit=64,
                       setting="N", variant=variant, width=8, d_batch=8,
                       g_batch=8, z_dim=Z_DIM, iterations=2, log_every=1,
                       grid_every=2, checkpoint_every=2, resume="none",
                       **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from bncr_tf.training import loop
    out = tmp_path_factory.mktemp("runs")
    return loop.train(_tiny(export_at_end=True, outdir=str(out)))


@pytest.fixture(scope="module")
def gens(run_dir):
    """The run's EMA generators restored from its last checkpoint."""
    _, g, _ = runs.load_generators(run_dir)
    return g


@pytest.fixture(scope="module")
def export_root(run_dir):
    return os.path.join(run_dir, "export")


def _version_dir(export_root, model, version=1):
    return os.path.join(export_root, model, str(version))


def _run(cmd, timeout=300):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _run_all(cmds, timeout=300):
    """Runs commands concurrently; returns their CompletedProcess-likes."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV)
             for c in cmds]
    results = []
    for c, p in zip(cmds, procs):
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return results


def _tree_digest(path):
    """{relative file path: sha256} of every file under path."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


# === Layout and versions ===


def test_layout_of_every_model(export_root):
    assert sorted(os.listdir(export_root)) == sorted(ALL_MODELS)
    for model in ALL_MODELS:
        model_dir = os.path.join(export_root, model)
        names = os.listdir(model_dir)
        assert "1" in names and all(n.isdigit() for n in names), names
        v = os.path.join(model_dir, "1")
        assert os.path.isfile(os.path.join(v, "saved_model.pb"))
        variables = os.listdir(os.path.join(v, "variables"))
        assert "variables.index" in variables
        assert any(re.fullmatch(r"variables\.data-\d+-of-\d+", n)
                   for n in variables), variables
        extra = os.path.join(v, "assets.extra")
        assert os.path.isfile(os.path.join(extra, export.WARMUP_FILE))
        with open(os.path.join(extra, export.INFO_FILE)) as f:
            info = json.load(f)
        assert info["model"] == model and info["variant"] == "bncrgan"
        assert info["step"] == 2


def test_cli_second_export_gets_version_2(run_dir, export_root):
    before = {m: _tree_digest(_version_dir(export_root, m))
              for m in ALL_MODELS}
    again = ["generator", "degrade"]
    result = _run([sys.executable,
                   os.path.join(REPO, "tools", "export_savedmodel.py"),
                   f"--run_dir={run_dir}", "--checkpoint=latest",
                   "--models=" + ",".join(again)])
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.split()
    assert printed == [_version_dir(export_root, m, 2) for m in again]
    for m in ALL_MODELS:
        versions = sorted(os.listdir(os.path.join(export_root, m)))
        assert versions == (["1", "2"] if m in again else ["1"]), m
        assert _tree_digest(_version_dir(export_root, m)) == before[m], m
    with open(os.path.join(_version_dir(export_root, "degrade", 2),
                           "assets.extra", export.INFO_FILE)) as f:
        info = json.load(f)
    assert info["checkpoint"].endswith("ckpt-2")
    assert info["run_dir"] == os.path.abspath(run_dir)
    # Same weights, so version 2 matches version 1.
    v1 = tf.saved_model.load(_version_dir(export_root, "generator", 1))
    v2 = tf.saved_model.load(_version_dir(export_root, "generator", 2))
    seed = tf.constant([4, 9], tf.int64)
    np.testing.assert_array_equal(v1.signatures["from_seed"](seed=seed)
                                  ["image"],
                                  v2.signatures["from_seed"](seed=seed)
                                  ["image"])


def test_cli_rejects_unknown_model(run_dir, tmp_path):
    result = _run([sys.executable,
                   os.path.join(REPO, "tools", "export_savedmodel.py"),
                   f"--run_dir={run_dir}", "--models=generator,bogus",
                   f"--export_root={tmp_path}"])
    assert result.returncode != 0
    assert "--models must be a comma-separated subset" in result.stderr
    assert os.listdir(tmp_path) == []


def test_existing_versions_are_never_touched(gens, tmp_path, monkeypatch):
    model_dir = tmp_path / "generator"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "marker.txt").write_text("foreign version 1")
    (model_dir / "2").mkdir()  # empty: os.rename would replace it
    # A stale version count, as if another exporter raced us.
    monkeypatch.setattr(export, "next_version", lambda model_dir: 1)
    paths = export.export_generators(gens, Z_DIM, RES, str(tmp_path),
                                     models=["generator"])
    assert paths == [str(model_dir / "3")]
    assert os.listdir(model_dir / "2") == []
    assert os.listdir(model_dir / "1") == ["marker.txt"]
    assert sorted(os.listdir(model_dir)) == ["1", "2", "3"]


def test_unknown_or_absent_model_is_a_user_error(gens, tmp_path):
    with pytest.raises(UserError, match="unknown model"):
        export.export_generators(gens, Z_DIM, RES, str(tmp_path),
                                 models=["sampler"])
    gan = dataclasses.replace(gens, G_k=None, G_n=None, G_q=None,
                              variant=dataclasses.replace(
                                  gens.variant, name="gan", blur="none",
                                  noise="none", jpeg="none"))
    with pytest.raises(UserError, match="has no blur_kernel model"):
        export.export_generators(gan, Z_DIM, RES, str(tmp_path),
                                 models=["blur_kernel"])
    assert os.listdir(tmp_path) == []


# === Separate process round trip ===

_CLIENT = textwrap.dedent("""
    import json, sys
    sys.modules["bncr_tf"] = None  # importing bncr_tf now fails
    import numpy as np
    import tensorflow as tf

    root, requests, inputs, outputs = sys.argv[1:]
    with open(requests) as f:
        requests = json.load(f)
    arrays = np.load(inputs, allow_pickle=False)
    loaded, results = {}, {}
    for rid, model, key, names in requests:
        if model not in loaded:
            loaded[model] = tf.saved_model.load(f"{root}/{model}/1")
        fn = loaded[model].signatures[key]
        out = fn(**{n: tf.constant(arrays[f"{rid}.{n}"]) for n in names})
        for name, value in out.items():
            value = value.numpy()
            if value.dtype == object:
                value = np.array(value.tolist(), dtype=bytes)
            results[f"{rid}.{name}"] = value
    assert sys.modules.get("bncr_tf") is None
    assert not [m for m in sys.modules if m.startswith("bncr_tf.")]
    np.savez(outputs, **results)
    print("client ok", len(results))
""")


def _reference_degrade(g, images, seeds):
    """In-memory degrade, one image at a time, as documented."""
    rows = []
    for image, seed in zip(images, seeds):
        x = tf.constant(image[None], tf.float32) / 127.5 - 1.0
        latents = synthesis.latents_from_seeds(
            tf.constant([seed], tf.int64), Z_DIM)
        out = synthesis.degrade(g, x, latents, tf.constant(
            [seed, export.DEGRADE_SALT], tf.int64))
        row = {"image_float": out.y[0].numpy()}
        if out.k is not None:
            row.update(kernel=out.k[0].numpy(),
                       mask_kernel=out.m_k[0].numpy())
        if out.n is not None:
            row["noise"] = out.n[0].numpy() / 2.0
        if out.q is not None:
            row.update(quality=out.q[0].numpy(),
                       mask_quality=out.m_q[0].numpy())
        rows.append(row)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _noise_only(g):
    return dataclasses.replace(
        g, G_k=None, G_q=None,
        variant=dataclasses.replace(g.variant, blur="none", jpeg="none"))


def _to_uint8(x):
    return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0,
                   255).astype(np.uint8)


def _assert_images(actual, expected_float):
    """uint8 images equal the rounded floats (off by one at .5 ties)."""
    diff = np.abs(actual.astype(int) - _to_uint8(expected_float).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_separate_process_matches_in_memory(gens, export_root, tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal([3, Z_DIM]).astype(np.float32)
    seeds = np.array([0, 5, 12345678901], np.int64)
    images = rng.integers(0, 256, [3, RES, RES, 3]).astype(np.uint8)
    requests = [
        ("g_z", "generator", "serving_default", {"z": z}),
        ("g_seed", "generator", "from_seed", {"seed": seeds}),
        ("g_seed1", "generator", "from_seed", {"seed": seeds[2:]}),
        ("g_png", "generator", "from_seed_png", {"seed": seeds}),
        ("k_z", "blur_kernel", "serving_default", {"z_k": z}),
        ("k_seed", "blur_kernel", "from_seed", {"seed": seeds}),
        ("q_z", "quality", "serving_default", {"z_q": z}),
        ("q_seed", "quality", "from_seed", {"seed": seeds}),
        ("n", "noise", "serving_default", {"image": images, "seed": seeds}),
        ("d", "degrade", "serving_default", {"image": images, "seed": seeds}),
        ("d1", "degrade", "serving_default",
         {"image": images[2:], "seed": seeds[2:]}),
    ]
    arrays = {f"{rid}.{n}": v for rid, _, _, ins in requests
              for n, v in ins.items()}
    np.savez(tmp_path / "in.npz", **arrays)
    with open(tmp_path / "requests.json", "w") as f:
        json.dump([[rid, m, k, sorted(ins)] for rid, m, k, ins in requests],
                  f)
    (tmp_path / "client.py").write_text(_CLIENT)
    result = _run([sys.executable, str(tmp_path / "client.py"), export_root,
                   str(tmp_path / "requests.json"), str(tmp_path / "in.npz"),
                   str(tmp_path / "out.npz")])
    assert result.returncode == 0, result.stderr[-3000:]
    out = dict(np.load(tmp_path / "out.npz", allow_pickle=False))
    close = dict(atol=1e-5, rtol=1e-5)

    # generator
    x = gens.G_x(z).numpy()
    np.testing.assert_allclose(out["g_z.image_float"], x, **close)
    _assert_images(out["g_z.image"], x)
    latents = synthesis.latents_from_seeds(seeds, Z_DIM)
    x = gens.G_x(latents["z_x"]).numpy()
    np.testing.assert_allclose(out["g_seed.image_float"], x, **close)
    _assert_images(out["g_seed.image"], x)
    np.testing.assert_array_equal(out["g_seed1.image"],
                                  out["g_seed.image"][2:])
    for i, png in enumerate(out["g_png.image_png_bytes"]):
        np.testing.assert_array_equal(tf.io.decode_png(png).numpy(),
                                      out["g_seed.image"][i])

    # blur_kernel and quality, from z and from seeds
    for rid, zk in (("k_z", z), ("k_seed", latents["z_k"])):
        g = gens.G_k(zk)
        np.testing.assert_allclose(out[f"{rid}.kernel"], g["k"], **close)
        np.testing.assert_allclose(out[f"{rid}.mask"], g["m_k"], **close)
        np.testing.assert_allclose(out[f"{rid}.kernel"].sum((1, 2)), 1.0,
                                   atol=1e-5)
        assert out[f"{rid}.entropy"].shape == (3,)
    for rid, zq in (("q_z", z), ("q_seed", latents["z_q"])):
        g = gens.G_q(zq)
        np.testing.assert_allclose(out[f"{rid}.quality"], g["q"], **close)
        np.testing.assert_allclose(out[f"{rid}.mask"], g["m_q"], **close)

    # noise and degrade, image by image
    for rid, g in (("n", _noise_only(gens)), ("d", gens)):
        ref = _reference_degrade(g, images, seeds)
        assert {f"{rid}.{k}" for k in list(ref) + ["image"]} == {
            k for k in out if k.startswith(f"{rid}.")}
        for key, value in ref.items():
            np.testing.assert_allclose(out[f"{rid}.{key}"], value, atol=1e-5,
                                       rtol=1e-4, err_msg=f"{rid}.{key}")
        _assert_images(out[f"{rid}.image"], ref["image_float"])
    # Row i depends only on its own image and seed.
    for key in ("image", "image_float", "kernel", "noise", "quality"):
        np.testing.assert_array_equal(out[f"d1.{key}"], out[f"d.{key}"][2:])
    # One seed, one sample: degrade uses the latents of from_seed.
    np.testing.assert_allclose(out["d.kernel"], out["k_seed.kernel"],
                               atol=1e-6)
    np.testing.assert_allclose(out["d.quality"], out["q_seed.quality"],
                               atol=1e-4)


# === saved_model_cli ===


def _documented_signatures():
    """{model: {signature: {"inputs"/"outputs": {key: (dtype, shape)}}}}
    parsed from the table in docs/serving.md, for this run's sizes."""
    path = os.path.join(REPO, "docs", "serving.md")
    with open(path) as f:
        lines = f.read().splitlines()
    sizes = {"z_dim": str(Z_DIM), "R": str(RES), "K": str(K)}
    table = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or cells[2] not in ("input", "output"):
            continue
        model, sig, io, key, dtype, shape = cells[:6]
        dims = [sizes.get(d.strip(), d.strip())
                for d in shape.strip("[]").split(",")]
        shape = "(" + ", ".join("-1" if d == "None" else d
                                for d in dims) + ")"
        table.setdefault(model, {}).setdefault(sig, {}).setdefault(
            io + "s", {})[key] = (dtype, shape)
    assert set(table) == set(ALL_MODELS), f"no signature table in {path}"
    return table


_DT = {"DT_FLOAT": "float32", "DT_UINT8": "uint8", "DT_INT64": "int64",
       "DT_STRING": "string"}


def _parse_show(text):
    """Signatures, tensors and method names from `saved_model_cli show
    --all`."""
    sigs, methods, sig, io, key = {}, {}, None, None, None
    for line in text.splitlines():
        m = re.match(r"signature_def\['(.+)'\]:", line)
        if m:
            sig = m.group(1)
            sigs[sig] = {"inputs": {}, "outputs": {}}
            continue
        m = re.match(r"\s+(inputs|outputs)\['(.+)'\] tensor_info:", line)
        if m and sig:
            io, key = m.groups()
            sigs[sig][io][key] = [None, None]
            continue
        m = re.match(r"\s+dtype: (\w+)", line)
        if m and key:
            sigs[sig][io][key][0] = _DT.get(m.group(1), m.group(1))
            continue
        m = re.match(r"\s+shape: (.+)", line)
        if m and key:
            sigs[sig][io][key][1] = m.group(1).strip()
            continue
        m = re.match(r"\s+Method name is: (.*)", line)
        if m and sig:
            methods[sig] = m.group(1).strip()
            key = None
    sigs.pop("__saved_model_init_op", None)
    methods.pop("__saved_model_init_op", None)
    return {name: {io: {k: tuple(v) for k, v in tensors.items()}
                   for io, tensors in s.items()}
            for name, s in sigs.items()}, methods


def _proto_signatures(version_dir):
    """The same structure as `_parse_show`, read from saved_model.pb."""
    sigs, methods = {}, {}
    for key, sig in _signature_defs(version_dir).items():
        methods[key] = sig.method_name
        sigs[key] = {
            io: {k: (tf.as_dtype(t.dtype).name,
                     "(" + ", ".join(str(d.size) for d in t.tensor_shape.dim)
                     + ")")
                 for k, t in getattr(sig, io).items()}
            for io in ("inputs", "outputs")}
    return sigs, methods


def test_every_model_has_the_documented_signatures(export_root):
    documented = _documented_signatures()
    for model in ALL_MODELS:
        sigs, methods = _proto_signatures(_version_dir(export_root, model))
        assert sigs == documented[model], model
        assert set(methods.values()) == {"tensorflow/serving/predict"}


def test_saved_model_cli_show_lists_documented_signatures(export_root):
    documented = _documented_signatures()
    shown = ["generator", "degrade"]  # the others: saved_model.pb above
    results = _run_all([SAVED_MODEL_CLI + ["show", "--dir",
                                           _version_dir(export_root, m),
                                           "--all"]
                        for m in shown])
    for model, result in zip(shown, results):
        assert result.returncode == 0, result.stderr[-2000:]
        sigs, methods = _parse_show(result.stdout)
        assert sigs == documented[model], model
        assert set(methods.values()) == {"tensorflow/serving/predict"}


def test_saved_model_cli_run_executes(gens, export_root, tmp_path):
    zeros = str([[0.0] * Z_DIM] * 2)
    result = _run(SAVED_MODEL_CLI + [
        "run", "--dir", _version_dir(export_root, "generator"), "--tag_set",
        "serve", "--signature_def", "serving_default", "--input_exprs",
        f"z={zeros}", "--outdir", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    image = np.load(tmp_path / "image.npy")
    image_float = np.load(tmp_path / "image_float.npy")
    assert image.dtype == np.uint8 and image.shape == (2, RES, RES, 3)
    expected = gens.G_x(np.zeros([2, Z_DIM], np.float32)).numpy()
    np.testing.assert_allclose(image_float, expected, atol=1e-5)


# === Wrong inputs ===


def test_wrong_shape_or_dtype_names_the_signature(export_root):
    gen = tf.saved_model.load(_version_dir(export_root, "generator"))
    deg = tf.saved_model.load(_version_dir(export_root, "degrade"))
    expected_z = "generator/serving_default expects z: float32 [None, 16]"
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        gen.signatures["serving_default"](z=tf.zeros([2, 15]))
    assert expected_z in str(e.value) and "wrong shape" in str(e.value)
    seed = tf.constant([1, 2], tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        deg.signatures["serving_default"](
            image=tf.zeros([2, 16, 16, 3], tf.uint8), seed=seed)
    assert ("degrade/serving_default expects image: uint8 [None, 32, 32, 3],"
            " seed: int64 [None]") in str(e.value)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="all inputs need the same batch size"):
        deg.signatures["serving_default"](
            image=tf.zeros([3, 32, 32, 3], tf.uint8), seed=seed)
    # TF's own dtype error names the input by position only ...
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="expected to be a float tensor but is a double"):
        gen.signatures["serving_default"](z=tf.zeros([2, 16], tf.float64))
    # ... so check_request names the signature, key and dtypes.
    sig = gen.signatures["serving_default"]
    with pytest.raises(ValueError) as e:
        export.check_request(sig, {"z": np.zeros([2, 16])},
                             key="serving_default")
    assert str(e.value) == (
        "signature 'serving_default' expects z: float32 [None, 16]; "
        "input 'z' is float64, not float32")
    with pytest.raises(ValueError, match=r"input 'z' has shape \[2, 15\]"):
        export.check_request(sig, {"z": np.zeros([2, 15], np.float32)})
    with pytest.raises(ValueError, match=r"missing inputs \['z'\]"):
        export.check_request(sig, {"seed": [1]})
    with pytest.raises(ValueError, match="not int64"):
        export.check_request(deg.signatures["serving_default"],
                             {"image": np.zeros([1, 32, 32, 3], np.uint8),
                              "seed": [0.5]})
    with pytest.raises(ValueError, match="different batch sizes"):
        export.check_request(deg.signatures["serving_default"],
                             {"image": np.zeros([1, 32, 32, 3], np.uint8),
                              "seed": [1, 2]})
    ok = export.check_request(sig, {"z": [[0.0] * 16]})
    assert ok["z"].dtype == tf.float32
    assert sig(**ok)["image"].shape == (1, 32, 32, 3)


def test_numeric_input_policy(export_root):
    """docs/serving.md, "Numeric inputs": NaN / Inf latents are rejected
    in the graph, naming the signature; large latents are accepted and
    still give valid images; the conversions a caller's client does before
    the model (seed 0.7 -> 0, float image 300.0 -> uint8 44) are what
    check_request rejects."""
    gen = tf.saved_model.load(_version_dir(export_root, "generator"))
    kern = tf.saved_model.load(_version_dir(export_root, "blur_kernel"))
    qual = tf.saved_model.load(_version_dir(export_root, "quality"))
    deg = tf.saved_model.load(_version_dir(export_root, "degrade"))
    bad = np.zeros([2, Z_DIM], np.float32)
    for value in (np.nan, np.inf, -np.inf):
        bad[1, 3] = value
        for model, fn, name in (
                ("generator", gen.signatures["serving_default"], "z"),
                ("blur_kernel", kern.signatures["serving_default"], "z_k"),
                ("quality", qual.signatures["serving_default"], "z_q")):
            with pytest.raises(tf.errors.InvalidArgumentError) as e:
                fn(**{name: tf.constant(bad)})
            assert (f"{model}/serving_default expects {name}: float32 "
                    f"[None, 16]; input '{name}' holds NaN or Inf") in str(
                        e.value)
    # Far outside N(0, 1): accepted, the image is still valid.
    out = gen.signatures["serving_default"](
        z=tf.fill([1, Z_DIM], 300.0))
    image_float = out["image_float"].numpy()
    assert np.all(np.isfinite(image_float))
    assert image_float.min() >= -1.0 and image_float.max() <= 1.0
    assert out["image"].dtype == tf.uint8
    k = kern.signatures["serving_default"](z_k=tf.fill([1, Z_DIM], 300.0))
    assert np.all(np.isfinite(k["kernel"].numpy()))
    np.testing.assert_allclose(k["kernel"].numpy().sum(axis=(1, 2)), 1.0,
                               atol=1e-4)
    q = qual.signatures["serving_default"](z_q=tf.fill([1, Z_DIM], -300.0))
    assert 0.0 <= float(q["quality"][0]) <= 100.0
    # Any int64 seed is valid, negative ones too.
    neg = gen.signatures["from_seed"](seed=tf.constant([-5, 2 ** 40],
                                                       tf.int64))
    assert np.all(np.isfinite(neg["image_float"].numpy()))
    # What a caller's conversion does before the model sees the input
    # (the model cannot tell) ...
    sig = gen.signatures["from_seed"]
    a = sig(seed=np.array([0.7]))["image"]
    b = sig(seed=tf.constant([0], tf.int64))["image"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    # ... and check_request rejects it, as it rejects NaN latents.
    with pytest.raises(ValueError, match="input 'seed' holds values that "
                       "are not int64"):
        export.check_request(sig, {"seed": [0.7]})
    with pytest.raises(ValueError, match="input 'seed' is float64, not "
                       "int64"):
        export.check_request(sig, {"seed": np.array([0.7])})
    dsig = deg.signatures["serving_default"]
    with pytest.raises(ValueError, match="input 'image' is float64, not "
                       "uint8"):
        export.check_request(dsig, {"image": np.full([1, 32, 32, 3], 300.0),
                                    "seed": [1]})
    with pytest.raises(ValueError, match="input 'image' holds values that "
                       "are not uint8"):
        export.check_request(dsig, {"image": np.full([1, 32, 32, 3],
                                                     300).tolist(),
                                    "seed": [1]})
    with pytest.raises(ValueError, match="input 'z' holds NaN or Inf"):
        export.check_request(gen.signatures["serving_default"],
                             {"z": bad})


# === Warm-up file ===


def _decode_prediction_log(record):
    """(model name, signature name, {input: ndarray}) of a PredictionLog
    holding a PredictLog, parsed by protobuf with TF Serving's own
    classes (as TF Serving reads the warm-up file)."""
    from tensorflow_serving.apis import prediction_log_pb2
    log = prediction_log_pb2.PredictionLog.FromString(record)
    assert log.WhichOneof("log_type") == "predict_log"
    assert not log.predict_log.HasField("response")
    request = log.predict_log.request
    # Nothing unknown to the parser (a wrong field number would land here).
    from google.protobuf import unknown_fields
    for message in (log, log.predict_log, request, request.model_spec):
        assert len(unknown_fields.UnknownFieldSet(message)) == 0
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    return request.model_spec.name, request.model_spec.signature_name, inputs


def _signature_defs(version_dir):
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    (graph,) = sm.meta_graphs
    return {k: v for k, v in graph.signature_def.items()
            if k != "__saved_model_init_op"}


def test_warmup_requests_decode_to_every_signature(export_root):
    for model in ALL_MODELS:
        v = _version_dir(export_root, model)
        path = os.path.join(v, "assets.extra", export.WARMUP_FILE)
        # Reading the whole file checks the TFRecord framing and CRCs.
        records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        defs = _signature_defs(v)
        seen = []
        for record in records:
            name, sig, inputs = _decode_prediction_log(record)
            assert name == model
            seen.append(sig)
            spec = defs[sig].inputs
            assert set(inputs) == set(spec), (model, sig)
            for key, value in inputs.items():
                assert tf.as_dtype(value.dtype).as_datatype_enum == (
                    spec[key].dtype), (model, sig, key)
                dims = [d.size for d in spec[key].tensor_shape.dim]
                assert value.shape[0] == export.WARMUP_BATCH
                assert list(value.shape[1:]) == dims[1:]
        assert sorted(seen) == sorted(defs), model
        assert len(records) <= 1000


def test_warmup_record_wire_format():
    record = export.warmup_record("m", "sig", {
        "seed": np.array([1, 300], np.int64)})
    name, sig, inputs = _decode_prediction_log(record)
    assert (name, sig) == ("m", "sig")
    np.testing.assert_array_equal(inputs["seed"], [1, 300])
    assert inputs["seed"].dtype == np.int64


# === Mixed precision, variants ===


@pytest.mark.parametrize("policy", [
    "mixed_float16", pytest.param("mixed_bfloat16", marks=pytest.mark.slow)])
def test_mixed_precision_keeps_input_dtypes(policy, tmp_path):
    keras.mixed_precision.set_global_policy(policy)
    try:
        g = models.build_generators(_tiny(mixed_precision=policy))
        assert g.G_x.dtype_policy.name == policy
        paths = export.export_generators(g, Z_DIM, RES, str(tmp_path),
                                         models=["generator", "degrade"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    float_types = {tf.float32.as_datatype_enum, tf.uint8.as_datatype_enum,
                   tf.int64.as_datatype_enum}
    for path in paths:
        for key, sig in _signature_defs(path).items():
            for name, info in sig.inputs.items():
                assert info.dtype in float_types, (path, key, name)
            for name, info in sig.outputs.items():
                assert info.dtype not in (tf.float16.as_datatype_enum,
                                          tf.bfloat16.as_datatype_enum)
    deg = tf.saved_model.load(paths[1]).signatures["serving_default"]
    out = deg(image=tf.fill([2, RES, RES, 3], tf.constant(128, tf.uint8)),
              seed=tf.constant([1, 2], tf.int64))
    assert out["image_float"].dtype == tf.float32
    assert np.isfinite(out["image_float"].numpy()).all()


@pytest.mark.parametrize("variant,expected", [
    ("gan", ["generator"]),
    ("brgan", ["generator", "blur_kernel", "degrade"]),
    ("nrgan_sd1", ["generator", "noise", "degrade"]),
    ("crgan", ["generator", "quality", "degrade"]),
    ("p_ambientgan", ALL_MODELS),
    ("ambientgan", ["generator", "degrade"]),
])
def test_available_models_per_variant(variant, expected, ambient_gens):
    g = (ambient_gens if variant == "ambientgan"
         else models.build_generators(_tiny(variant)))
    assert export.available_models(g) == expected
    assert list(export.plan_models(g, Z_DIM, RES)) == expected


@pytest.fixture(scope="module")
def ambient_gens():
    """AmbientGAN's generators (its kernel bank takes a few seconds)."""
    return models.build_generators(_tiny("ambientgan"))


def test_ambientgan_degrades_with_the_true_degradation(tmp_path,
                                                        ambient_gens):
    g = ambient_gens
    (path,) = export.export_generators(g, Z_DIM, RES, str(tmp_path),
                                       models=["degrade"])
    fn = tf.saved_model.load(path).signatures["serving_default"]
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, [3, RES, RES, 3]).astype(np.uint8)
    seeds = np.array([10, 11, 12], np.int64)
    out = fn(image=tf.constant(images), seed=tf.constant(seeds))
    assert set(out) == {"image", "image_float", "kernel", "mask_kernel",
                        "noise", "quality", "mask_quality"}
    ref = _reference_degrade(g, images, seeds)
    np.testing.assert_allclose(out["image_float"], ref["image_float"],
                               atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out["kernel"], ref["kernel"], atol=1e-6)
    one = fn(image=tf.constant(images[1:2]), seed=tf.constant(seeds[1:2]))
    np.testing.assert_array_equal(one["image"], out["image"][1:2])
