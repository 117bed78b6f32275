"""The TTUR Inception network for FID and KID: weights, checksum, loader.

Published FIDs (TTUR, and the NR-GAN / BNCR-GAN papers that build on it)
use the frozen graph `classify_image_graph_def.pb` of Google's
`inception-2015-12-05.tgz`, run as in bioinf-jku/TTUR fid.py:

- the GraphDef is imported under the name "FID_Inception_Net";
- images are fed to "FID_Inception_Net/ExpandDims:0" as float32
  [N, H, W, 3] with values in [0, 255] and any H, W (the graph itself
  resizes bilinearly to 299 x 299 and maps to [-1, 1]);
- features are read from "FID_Inception_Net/pool_3:0", [N, 1, 1, 2048],
  reshaped to [N, 2048].

The graph was frozen with batch size 1; TTUR rewrites the static shapes of
the imported tensors to feed batches. We instead replace the ExpandDims
node by a [None, None, None, 3] placeholder before importing, which feeds
the same consumers with the same values.

Why a tf.compat.v1 session: the GraphDef has producer version < 9 and uses
BatchNormWithGlobalNormalization, which TensorFlow removed from GraphDef
version 9. A tf.function (or wrap_function) runs at the current GraphDef
version and refuses the op ("not available in GraphDef version ..."); a
tf.Graph that imported the GraphDef keeps its producer version, exactly as
TensorFlow 1 did.

Where the weights come from, in order: an explicit path (the .pb, the
.tgz, or a directory holding either; `--inception_path`), the environment
variable BNCR_INCEPTION_PATH, the cache `<cache dir>/inception-2015-12-05/`
(BNCR_CACHE_DIR, default ~/.cache/bncr_tf), and finally a one-time download
of INCEPTION_URL into that cache. The download is the only network access
of the project. Every file is checked by sha256 (see `INCEPTION_PB_SHA256`)
and a mismatch is refused.
"""

import logging
import os
import sys
import tarfile
import tempfile
import urllib.request

import numpy as np
import tensorflow as tf

from bncr_tf import fileio
from bncr_tf.fileio import sha256_file  # noqa: F401  (public name)
from bncr_tf.errors import UserError

log = logging.getLogger("bncr_tf")

# bioinf-jku/TTUR fid.py, check_or_download_inception().
INCEPTION_URL = ("http://download.tensorflow.org/models/image/imagenet/"
                 "inception-2015-12-05.tgz")
INCEPTION_TGZ = "inception-2015-12-05.tgz"
INCEPTION_PB = "classify_image_graph_def.pb"
INCEPTION_DIR = "inception-2015-12-05"
INPUT_TENSOR = "ExpandDims:0"
OUTPUT_TENSOR = "pool_3:0"
SCOPE = "FID_Inception_Net"
FEATURE_DIM = 2048

# sha256 of classify_image_graph_def.pb inside INCEPTION_TGZ. No public
# source that states it could be found while writing this module (TTUR and
# the TensorFlow tutorials publish no checksum), and the file could not be
# downloaded here to compute it, so it is None: the first file used is then
# pinned (its sha256 is written next to the cached copy, `PIN_SUFFIX`) and
# any later file with a different hash is refused. Set this constant (or
# BNCR_INCEPTION_SHA256) to a hash computed on a trusted copy with
# `sha256sum classify_image_graph_def.pb` to check against it instead.
INCEPTION_PB_SHA256 = None
PIN_SUFFIX = ".sha256"

ENV_PATH = "BNCR_INCEPTION_PATH"
ENV_SHA256 = "BNCR_INCEPTION_SHA256"
ENV_CACHE = "BNCR_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 60


def cache_dir(path=None):
    """The cache directory: `path`, $BNCR_CACHE_DIR or ~/.cache/bncr_tf."""
    path = path or os.environ.get(ENV_CACHE) or os.path.join(
        "~", ".cache", "bncr_tf")
    return os.path.abspath(os.path.expanduser(path))


def _extract_pb(tgz_path, dest):
    """Copies INCEPTION_PB out of the .tgz to dest (atomically)."""
    try:
        with tarfile.open(tgz_path, "r:*") as archive:
            members = [m for m in archive.getmembers()
                       if m.isfile() and os.path.basename(m.name)
                       == INCEPTION_PB]
            if not members:
                raise UserError(f"{tgz_path} does not contain {INCEPTION_PB}")
            data = archive.extractfile(members[0]).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read {tgz_path}: {e}") from None
    fileio.atomic_write_bytes(dest, data)


def _download(url, dest, timeout=DOWNLOAD_TIMEOUT_S):
    """Downloads url to dest (temporary file + os.replace), with progress."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(
                url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if total:
                    print(f"\rdownloading {url}: {done / 2**20:.1f} of "
                          f"{total / 2**20:.1f} MiB", end="", file=sys.stderr)
            print(file=sys.stderr)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _local_candidate(path):
    """Maps a user path (file or directory) to (pb or tgz path)."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        for name in (INCEPTION_PB, INCEPTION_TGZ):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UserError(f"{path} holds neither {INCEPTION_PB} nor "
                        f"{INCEPTION_TGZ}")
    if not os.path.isfile(path):
        raise UserError(f"Inception weights {path} do not exist")
    return path


def _is_archive(path):
    return path.endswith((".tgz", ".tar.gz", ".tar"))


def resolve_inception_path(path=None, cache=None, url=INCEPTION_URL,
                           sha256=None, allow_download=True):
    """Finds (or downloads once) and verifies the TTUR Inception graph.

    Args:
      path: the .pb, the .tgz, or a directory holding either; None uses
        $BNCR_INCEPTION_PATH, then the cache, then the download.
      cache: cache directory (None: `cache_dir()`).
      url: where to download the .tgz from when nothing is found.
      sha256: expected hex sha256 of the .pb; None uses
        $BNCR_INCEPTION_SHA256, `INCEPTION_PB_SHA256`, then the hash
        pinned on first use in the cache.
      allow_download: may download when the file is missing.
    Returns:
      (absolute path of the verified .pb, its hex sha256).
    Raises:
      UserError: one sentence, for a missing file that cannot be
        downloaded, an unreadable archive, or a sha256 mismatch.
    """
    cache = cache_dir(cache)
    cached_pb = os.path.join(cache, INCEPTION_DIR, INCEPTION_PB)
    path = path or os.environ.get(ENV_PATH) or None
    if path:
        pb = _local_candidate(path)
        if _is_archive(pb):
            _extract_pb(pb, cached_pb)
            pb = cached_pb
    elif os.path.isfile(cached_pb):
        pb = cached_pb
    else:
        tgz = os.path.join(cache, INCEPTION_DIR, INCEPTION_TGZ)
        if not os.path.isfile(tgz):
            if not allow_download:
                raise UserError(_missing_message(url, cache, "downloads "
                                                 "are disabled"))
            try:
                _download(url, tgz)
            except (OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise UserError(_missing_message(url, cache, reason)) from None
        _extract_pb(tgz, cached_pb)
        os.remove(tgz)
        pb = cached_pb
    return pb, _verify(pb, sha256, cached_pb + PIN_SUFFIX)


def _missing_message(url, cache, reason):
    reason = " ".join(str(reason).split())
    return (f"the Inception weights {INCEPTION_PB} are missing and cannot be "
            f"downloaded from {url} ({reason}); fetch {INCEPTION_TGZ} from "
            f"that address on a connected machine and put it, or the "
            f"{INCEPTION_PB} inside it, into "
            f"{os.path.join(cache, INCEPTION_DIR)}/, or pass "
            f"--inception_path / set {ENV_PATH}")


def _verify(pb, sha256, pin_path):
    """Checks pb against the expected (or pinned) sha256; returns it."""
    actual = sha256_file(pb)
    expected = (sha256 or os.environ.get(ENV_SHA256) or INCEPTION_PB_SHA256)
    origin, hint = "the expected value", ""
    if not expected and os.path.isfile(pin_path):
        with open(pin_path) as f:
            words = f.read().split()
        expected = words[0] if words else None
        origin = f"the hash pinned on first use in {pin_path}"
        hint = f", or delete {pin_path} if you replaced it on purpose"
    if expected:
        if actual != expected.lower():
            raise UserError(
                f"{pb} has sha256 {actual} but {expected} is {origin}; "
                f"refusing to use it (replace it with the official "
                f"{INCEPTION_PB} from {INCEPTION_URL}{hint})")
        return actual
    fileio.atomic_write_bytes(
        pin_path, (actual + "  " + INCEPTION_PB + "\n").encode())
    log.warning("no published sha256 is recorded for %s; pinned %s in %s",
                INCEPTION_PB, actual, pin_path)
    return actual


def _read_graph_def(path):
    graph_def = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except Exception as e:  # protobuf raises its own DecodeError
        raise UserError(f"{path} is not a frozen TensorFlow graph: "
                        f"{e}") from None
    return graph_def


def _replace_with_placeholder(graph_def, input_tensor):
    """Returns a copy of graph_def whose `input_tensor` node is a float32
    [None, None, None, 3] placeholder of the same name."""
    name, _, index = input_tensor.partition(":")
    if index not in ("", "0"):
        raise ValueError(f"only output 0 can be fed, got {input_tensor}")
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if node.name == name:
            node.Clear()
            node.name = name
            node.op = "Placeholder"
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            shape = node.attr["shape"].shape
            for _ in range(3):
                shape.dim.add().size = -1
            shape.dim.add().size = 3
            return out
    raise UserError(f"the graph has no node {name!r}; is it the TTUR "
                    f"Inception graph {INCEPTION_PB}?")


class FrozenGraphFunction:
    """Runs one input -> one output of a frozen GraphDef, batched.

    Args:
      graph_def: a `GraphDef`.
      input_tensor: name of the tensor to feed ("ExpandDims:0"): its node
        becomes a float32 [None, None, None, 3] placeholder.
      output_tensor: name of the tensor to fetch ("pool_3:0").
      scope: import name prefix ("FID_Inception_Net", as TTUR).

    Example:
      fn = FrozenGraphFunction(graph_def, "ExpandDims:0", "pool_3:0")
      features = fn(images)   # float32 [N, H, W, 3] -> [N, D]
    """

    def __init__(self, graph_def, input_tensor=INPUT_TENSOR,
                 output_tensor=OUTPUT_TENSOR, scope=SCOPE):
        out_node = output_tensor.partition(":")[0]
        if not any(n.name == out_node for n in graph_def.node):
            raise UserError(f"the graph has no node {out_node!r}; is it the "
                            f"TTUR Inception graph {INCEPTION_PB}?")
        graph_def = _replace_with_placeholder(graph_def, input_tensor)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name=scope)
        self._input = self.graph.get_tensor_by_name(
            f"{scope}/{input_tensor.partition(':')[0]}:0")
        self._output = self.graph.get_tensor_by_name(
            f"{scope}/{output_tensor}")
        self._session = tf.compat.v1.Session(graph=self.graph)

    def __call__(self, images):
        """float32 [N, H, W, 3] -> float32 [N, D] (output flattened)."""
        images = np.asarray(images, np.float32)
        out = self._session.run(self._output, {self._input: images})
        return out.reshape(len(images), -1)

    def close(self):
        self._session.close()


def load_frozen_graph(path, input_tensor=INPUT_TENSOR,
                      output_tensor=OUTPUT_TENSOR, scope=SCOPE):
    """Loads a frozen graph file into a `FrozenGraphFunction`."""
    return FrozenGraphFunction(_read_graph_def(path), input_tensor,
                               output_tensor, scope)


class TTURInception:
    """Feature extractor: TTUR Inception pool3, 2048-d (comparable FIDs).

    Args:
      path, cache, url, sha256, allow_download: see
        `resolve_inception_path`.
      batch_size: images per session run (TTUR uses 50).

    Attributes:
      name: "ttur_inception_pool3".
      fingerprint: name + sha256 of the graph (cache keys, metric lines).
      comparable: True (numbers compare with published TTUR FIDs).

    Example:
      extractor = TTURInception(path="~/inception-2015-12-05.tgz")
      features = extractor(images_uint8)   # [N, 2048] float64
    """

    name = "ttur_inception_pool3"
    comparable = True

    def __init__(self, path=None, cache=None, url=INCEPTION_URL, sha256=None,
                 allow_download=True, batch_size=50):
        self.path, self.sha256 = resolve_inception_path(
            path, cache, url, sha256, allow_download)
        self.fingerprint = f"{self.name}-sha256:{self.sha256}"
        self.batch_size = int(batch_size)
        self._fn = load_frozen_graph(self.path)

    def __call__(self, images):
        """uint8 [N, H, W, 3] in [0, 255] -> float64 [N, 2048]."""
        images = np.asarray(images)
        out = [self._fn(images[i:i + self.batch_size].astype(np.float32))
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).astype(np.float64)
