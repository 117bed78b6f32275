"""Tests of bncr_tf.metrics: Fréchet distance, KID, the Inception loader,
reference-statistics caching and FID of degraded natural patches.

Offline and CPU only: the Inception graph is replaced by a small frozen
graph built here with the TTUR tensor names, and the FID sensitivity test
uses the fixed random conv extractor.
"""

import io
import json
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from scipy import linalg

from bncr_tf import data
from bncr_tf.degradations import jpeg
from bncr_tf.degradations import kernels
from bncr_tf.metrics import evaluation
from bncr_tf.metrics import features
from bncr_tf.metrics import fid
from bncr_tf.metrics import inception
from bncr_tf.metrics import reference
from bncr_tf.training.config import UserError


# --- Fréchet distance --------------------------------------------------------

def _closed_form(mu1, a, mu2, b):
    """FD of N(mu1, Q diag(a) Q^T) and N(mu2, Q diag(b) Q^T)."""
    return float(np.sum((mu1 - mu2) ** 2)
                 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


@pytest.mark.parametrize("method", ["svd", "sqrtm"])
@pytest.mark.parametrize("rotate", [False, True])
def test_frechet_distance_closed_form(method, rotate):
    rng = np.random.default_rng(1)
    d = 24
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a = rng.uniform(0.1, 3.0, d)
    b = rng.uniform(0.1, 3.0, d)
    a[:3] = 0.0  # exactly singular in three directions
    q = (np.linalg.qr(rng.normal(size=(d, d)))[0] if rotate
         else np.eye(d))
    s1 = q @ np.diag(a) @ q.T
    s2 = q @ np.diag(b) @ q.T
    got = fid.frechet_distance(mu1, s1, mu2, s2, method=method)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, _closed_form(mu1, a, mu2, b), rtol=1e-7)


def _scipy_reference(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2.0 * np.trace(np.real(covmean)))


def _features(rng, n, d, scale, shift):
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix * scale + shift


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(2)
    x = _features(rng, 600, 32, 1.0, 0.5)
    y = _features(rng, 500, 32, 1.3, 0.2)
    mu1, s1 = np.mean(x, 0), np.cov(x, rowvar=False)
    mu2, s2 = np.mean(y, 0), np.cov(y, rowvar=False)
    want = _scipy_reference(mu1, s1, mu2, s2)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want,
                               rtol=1e-9)


@pytest.mark.parametrize("n1,n2", [(20, 30), (64, 10)])
def test_frechet_distance_singular_covariances(n1, n2):
    """Fewer samples than dimensions: rank-deficient covariances. The
    reference is Tr sqrt(S1 S2) = nuclear norm of A1 A2^T with S_i =
    A_i^T A_i the centred data (an exact identity), checked against scipy."""
    rng = np.random.default_rng(3)
    d = 48
    x = _features(rng, n1, d, 1.0, 0.3)
    y = _features(rng, n2, d, 0.7, 0.1)
    mu1, s1 = np.mean(x, 0), np.cov(x, rowvar=False)
    mu2, s2 = np.mean(y, 0), np.cov(y, rowvar=False)
    a1 = (x - mu1) / np.sqrt(n1 - 1)
    a2 = (y - mu2) / np.sqrt(n2 - 1)
    nuclear = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    want = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2.0 * nuclear)
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and not isinstance(got, complex)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # scipy's sqrtm is only accurate to ~sqrt(eps) on singular products.
    np.testing.assert_allclose(_scipy_reference(mu1, s1, mu2, s2), want,
                               rtol=1e-4)
    sqrtm = fid.frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert isinstance(sqrtm, float)
    np.testing.assert_allclose(sqrtm, want, rtol=1e-4)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(4)
    for n, d in [(300, 64), (30, 64)]:
        mu, sigma = fid.feature_statistics(_features(rng, n, d, 2.0, 1.0))
        value = fid.frechet_distance(mu, sigma, mu, sigma)
        assert abs(value) < 1e-9 * np.trace(sigma)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="method"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2),
                             method="magic")
    # A non-PSD "covariance" gives a large imaginary sqrtm: refused.
    bad = np.array([[1.0, 0.0], [0.0, -4.0]])
    with pytest.raises(ValueError, match="imaginary"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), bad,
                             method="sqrtm")


def test_feature_stats_streaming_equals_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(257, 9)) * 3.0 + 1000.0  # large mean, small spread
    stats = fid.FeatureStats(max_features=100)
    for start in range(0, len(x), 64):
        stats.update(x[start:start + 64])
    assert stats.count == 257
    np.testing.assert_allclose(stats.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.features(), x[:100].astype(np.float32))


# --- KID ---------------------------------------------------------------------

def _plain_mmd2(x, y):
    """Unbiased MMD^2, cubic polynomial kernel, written with loops."""
    d = x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def test_kid_matches_plain_numpy_estimator():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 7))
    y = rng.normal(size=(25, 7)) * 1.2 + 0.3
    np.testing.assert_allclose(fid.mmd2_unbiased(x, y), _plain_mmd2(x, y),
                               rtol=1e-10)
    # One subset covering both (equal-size) sets is the full estimator.
    out = fid.kernel_distance(x[:25], y, num_subsets=1, max_subset_size=100)
    np.testing.assert_allclose(out["kid"], _plain_mmd2(x[:25], y),
                               rtol=1e-10)
    assert out["kid_std"] == 0.0 and out["subset_size"] == 25
    # Subsets: every term is an unbiased estimate of the same MMD^2.
    big_x = rng.normal(size=(400, 7))
    big_y = rng.normal(size=(400, 7)) + 0.5
    sub = fid.kernel_distance(big_x, big_y, num_subsets=40,
                              max_subset_size=100, seed=1)
    full = fid.mmd2_unbiased(big_x, big_y)
    assert sub["kid_std"] > 0
    assert abs(sub["kid"] - full) < 4 * sub["kid_std"] / np.sqrt(40) + 1e-3
    # Same distribution: KID near zero relative to the shifted case.
    same = fid.kernel_distance(big_x[:200], big_x[200:], num_subsets=10,
                               max_subset_size=100)
    assert abs(same["kid"]) < 0.2 * sub["kid"]


# --- The TTUR graph loader ---------------------------------------------------

FAKE_DIM = 8
FAKE_SIZE = 16


def _fake_constants():
    rng = np.random.default_rng(7)
    return {
        "w": rng.normal(size=(3, 3, 3, FAKE_DIM)).astype(np.float32) * 0.3,
        "mean": rng.normal(size=FAKE_DIM).astype(np.float32) * 0.1,
        "var": rng.uniform(0.5, 2.0, FAKE_DIM).astype(np.float32),
        "beta": rng.normal(size=FAKE_DIM).astype(np.float32) * 0.1,
        "gamma": rng.uniform(0.5, 1.5, FAKE_DIM).astype(np.float32),
    }


def _fake_inception_graph_def():
    """A small frozen graph with the TTUR tensor names and quirks: a JPEG
    input branch, ExpandDims:0 (batch 1), ResizeBilinear, a
    BatchNormWithGlobalNormalization node (removed in GraphDef version 9)
    and GraphDef producer version 8, pool_3 and a batch-1 reshape."""
    c = _fake_constants()
    g = tf.Graph()
    with g.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [],
                                            name="DecodeJpeg/contents")
        image = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        x = tf.expand_dims(tf.cast(image, tf.float32, name="Cast"), 0,
                           name="ExpandDims")
        x = tf.raw_ops.ResizeBilinear(
            images=x, size=tf.constant([FAKE_SIZE, FAKE_SIZE]),
            align_corners=False, name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1.0 / 128.0,
                        name="Mul")
        conv = tf.nn.conv2d(x, tf.constant(c["w"]), 1, "SAME",
                            name="conv/Conv2D")
        for key in ("mean", "var", "beta", "gamma"):
            tf.constant(c[key], name=f"conv/{key}")
        relu = tf.nn.relu(conv, name="conv")
        pool = tf.nn.avg_pool2d(relu, FAKE_SIZE, FAKE_SIZE, "VALID",
                                name="pool_3")
        tf.reshape(pool, [1, FAKE_DIM], name="pool_3/_reshape")
    graph_def = g.as_graph_def()
    # Insert the deprecated batch-norm op by hand (TF refuses to build it).
    bn = graph_def.node.add()
    bn.name = "conv/batchnorm"
    bn.op = "BatchNormWithGlobalNormalization"
    bn.input.extend(["conv/Conv2D", "conv/mean", "conv/var", "conv/beta",
                     "conv/gamma"])
    bn.attr["T"].type = tf.float32.as_datatype_enum
    bn.attr["variance_epsilon"].f = 1e-3
    bn.attr["scale_after_normalization"].b = True
    for node in graph_def.node:
        if node.name == "conv":
            node.input[0] = "conv/batchnorm"
    graph_def.versions.producer = 8
    return graph_def


def _fake_features_reference(images_u8):
    """The fake graph's pool_3 features computed eagerly, image by image."""
    c = _fake_constants()
    out = []
    for image in images_u8:
        x = tf.cast(image[None], tf.float32)
        x = tf.raw_ops.ResizeBilinear(images=x, size=[FAKE_SIZE, FAKE_SIZE],
                                      align_corners=False)
        x = (x - 128.0) / 128.0
        h = tf.nn.conv2d(x, c["w"], 1, "SAME")
        h = ((h - c["mean"]) * tf.math.rsqrt(c["var"] + 1e-3) * c["gamma"]
             + c["beta"])
        out.append(tf.reduce_mean(tf.nn.relu(h), axis=[1, 2]).numpy()[0])
    return np.stack(out)


@pytest.fixture(scope="module")
def fake_pb(tmp_path_factory):
    path = tmp_path_factory.mktemp("fake_inception") / inception.INCEPTION_PB
    path.write_bytes(_fake_inception_graph_def().SerializeToString())
    return str(path)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (n, size, size, 3), dtype=np.uint8)


def test_graph_loader_runs_the_ttur_graph_batched(fake_pb, tmp_path):
    sha = inception.sha256_file(fake_pb)
    extractor = inception.TTURInception(path=fake_pb, cache=str(tmp_path),
                                        sha256=sha, batch_size=3)
    assert extractor.fingerprint.endswith(sha) and extractor.comparable
    images = _images(7, 20)
    got = extractor(images)
    assert got.shape == (7, FAKE_DIM) and got.dtype == np.float64
    np.testing.assert_allclose(got, _fake_features_reference(images),
                               rtol=1e-5, atol=1e-6)
    # The batch-1 graph accepts any batch size, and images are independent.
    np.testing.assert_allclose(extractor(images[2:3]), got[2:3], rtol=1e-6)


def test_graph_loader_refuses_checksum_mismatch(fake_pb, tmp_path):
    with pytest.raises(UserError, match="sha256") as err:
        inception.TTURInception(path=fake_pb, cache=str(tmp_path),
                                sha256="0" * 64)
    assert "refusing" in str(err.value) and "\n" not in str(err.value)


def test_graph_loader_refuses_graph_without_ttur_names(tmp_path):
    path = tmp_path / "other.pb"
    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="something")
    path.write_bytes(g.as_graph_def().SerializeToString())
    with pytest.raises(UserError, match="TTUR Inception"):
        inception.load_frozen_graph(str(path))


def test_missing_weights_without_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_PATH, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        inception.resolve_inception_path(
            cache=str(cache),
            url="http://127.0.0.1:9/inception-2015-12-05.tgz")
    message = str(err.value)
    assert "\n" not in message
    assert inception.INCEPTION_PB in message
    assert str(cache / inception.INCEPTION_DIR) in message
    with pytest.raises(UserError, match="downloads are disabled"):
        inception.resolve_inception_path(cache=str(cache),
                                         allow_download=False)
    with pytest.raises(UserError, match="do not exist"):
        inception.resolve_inception_path(path=str(tmp_path / "nope.pb"))


def test_download_extract_pin_and_refuse_tampering(fake_pb, tmp_path,
                                                   monkeypatch):
    """The download path with a file:// URL: extract the .pb from the .tgz,
    pin its hash, reuse the cache, refuse a modified file."""
    monkeypatch.delenv(inception.ENV_PATH, raising=False)
    monkeypatch.delenv(inception.ENV_SHA256, raising=False)
    tgz = tmp_path / inception.INCEPTION_TGZ
    with tarfile.open(tgz, "w:gz") as archive:
        archive.add(fake_pb, arcname=inception.INCEPTION_PB)
        info = tarfile.TarInfo("LICENSE")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"MIT"))
    cache = tmp_path / "cache"
    pb, sha = inception.resolve_inception_path(cache=str(cache),
                                               url=tgz.as_uri())
    assert pb == str(cache / inception.INCEPTION_DIR / inception.INCEPTION_PB)
    assert sha == inception.sha256_file(fake_pb)
    assert not os.path.exists(cache / inception.INCEPTION_DIR
                              / inception.INCEPTION_TGZ)
    pin = pb + inception.PIN_SUFFIX
    assert open(pin).read().split()[0] == sha
    # Second use: from the cache, no download (the URL is unreachable).
    assert inception.resolve_inception_path(
        cache=str(cache), url="http://127.0.0.1:9/x.tgz")[1] == sha
    with open(pb, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="pinned on first use"):
        inception.resolve_inception_path(cache=str(cache))
    # The environment variable names the file (here the original .tgz).
    monkeypatch.setenv(inception.ENV_PATH, str(tgz))
    assert inception.resolve_inception_path(cache=str(cache))[1] == sha


def test_keras_inception_v3_alternative():
    with pytest.raises(UserError, match="keras_weights"):
        features.KerasInceptionV3()
    extractor = features.KerasInceptionV3(random_init=True, batch_size=2)
    assert not extractor.comparable
    assert "random-init" in extractor.fingerprint
    out = extractor(_images(3, 32))
    assert out.shape == (3, 2048) and np.all(np.isfinite(out))


def test_make_extractor_registry(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_PATH, raising=False)
    extractor = features.make_extractor("random_conv", seed=3)
    assert extractor.fingerprint == features.make_extractor(
        "random_conv", seed=3).fingerprint
    assert extractor.fingerprint != features.make_extractor(
        "random_conv", seed=4).fingerprint
    with pytest.raises(UserError, match="unknown feature extractor"):
        features.make_extractor("vgg")
    with pytest.raises(UserError, match="missing"):
        features.make_extractor("inception", cache=str(tmp_path),
                                allow_download=False)


# --- FID of degraded natural patches -----------------------------------------

@pytest.fixture(scope="module")
def patches():
    images, _ = data.load_clean_uint8("builtin:skimage_patches:count=300", 32,
                                      seed=0)
    return images


@pytest.fixture(scope="module")
def random_conv():
    return features.RandomConvFeatures(seed=0)


def _fid_to(reference_stats, images, extractor):
    stats = features.extract_statistics([images], extractor, progress=False)
    return fid.frechet_distance(stats.mean(), stats.cov(), reference_stats.mu,
                                reference_stats.sigma)


def _to_u8(unit):
    return np.clip(np.round(np.asarray(unit) * 255.0), 0, 255).astype(np.uint8)


def test_fid_grows_with_blur_noise_and_jpeg(patches, random_conv):
    ref = reference.ReferenceStats.from_feature_stats(
        features.extract_statistics([patches], random_conv, progress=False))
    unit = patches.astype(np.float32) / 255.0
    n = len(patches)
    self_fid = _fid_to(ref, patches, random_conv)

    blur = []
    for radius in (0.75, 1.0, 1.5, 2.0, 3.0):
        k = kernels.disk_kernel(np.full(n, radius, np.float32), 9)
        blur.append(_fid_to(ref, _to_u8(np.clip(
            kernels.blur(unit, k), 0, 1)), random_conv))
    noise = []
    rng = np.random.default_rng(0)
    eps = rng.standard_normal(unit.shape).astype(np.float32)
    for sigma in (0.01, 0.02, 0.05, 0.1, 0.2):
        noise.append(_fid_to(ref, _to_u8(np.clip(unit + sigma * eps, 0, 1)),
                             random_conv))
    compression = []
    for quality in (95, 80, 60, 40, 20, 5):
        compression.append(_fid_to(ref, _to_u8(jpeg.jpeg_compress(
            unit, np.full(n, quality, np.float32))), random_conv))

    print("self", self_fid, "blur", blur, "noise", noise, "jpeg", compression)
    for values in (blur, noise, compression):
        assert np.all(np.diff(values) > 0), values
        assert self_fid < 1e-6 * values[0]
    assert abs(self_fid) < 1e-9 * np.trace(ref.sigma)


# --- Reference statistics cache and generator evaluation ---------------------

class _CountingExtractor:
    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.name = inner.name
        self.batch_size = 64
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        return self.inner(images)


def test_reference_stats_cache(tmp_path, random_conv):
    counting = _CountingExtractor(random_conv)
    spec = "builtin:skimage_patches:count=40"
    first = reference.reference_stats(spec, 32, counting, seed=0,
                                      cache=str(tmp_path), progress=False)
    calls = counting.calls
    assert calls > 0 and first.num_images == 40
    path = first.meta["cache_path"]
    assert os.path.isfile(path) and path.endswith(".npz")
    assert not [p for p in os.listdir(os.path.dirname(path))
                if p.startswith(".tmp")]
    with np.load(path, allow_pickle=False) as f:
        assert json.loads(str(f["meta"]))["source"].startswith("builtin:")
    again = reference.reference_stats(spec, 32, counting, seed=0,
                                      cache=str(tmp_path), progress=False)
    assert counting.calls == calls
    np.testing.assert_array_equal(again.sigma, first.sigma)
    # KID features are computed (and cached) when asked for.
    with_features = reference.reference_stats(
        spec, 32, counting, seed=0, cache=str(tmp_path), num_features=100,
        progress=False)
    assert counting.calls > calls and with_features.features.shape == (
        40, random_conv.dim)
    # Every part of the key changes the file.
    keys = {path}
    for kwargs in ({"limit": 20}, {"seed": 1}):
        keys.add(reference.reference_stats(
            spec, 32, counting, cache=str(tmp_path), progress=False,
            **{"seed": 0, **kwargs}).meta["cache_path"])
    keys.add(reference.reference_stats(
        spec, 16, counting, seed=0, cache=str(tmp_path),
        progress=False).meta["cache_path"])
    keys.add(reference.reference_stats(
        spec, 32, features.RandomConvFeatures(seed=1), seed=0,
        cache=str(tmp_path), progress=False).meta["cache_path"])
    assert len(keys) == 5
    with pytest.raises(UserError, match="unknown data source scheme"):
        reference.reference_stats("nope:x", 32, counting)


def test_evaluate_generators_samples_clean_g_x(random_conv):
    from bncr_tf import models
    from bncr_tf import synthesis
    from bncr_tf.training.config import TrainConfig
    config = TrainConfig(variant="bncrgan", setting="N", width=8, z_dim=16,
                         resolution=16)
    gens = models.build_generators(config)
    images = np.concatenate(list(evaluation.generated_images(
        gens, 10, seed=5, batch_size=4)))
    latents = synthesis.latents_from_seeds(tf.range(5, 15, dtype=tf.int64),
                                           16)
    want = evaluation.to_uint8(gens.G_x(latents["z_x"]).numpy())
    np.testing.assert_array_equal(images, want)
    ref = reference.ReferenceStats.from_feature_stats(
        features.extract_statistics([want], random_conv, max_features=10,
                                    progress=False))
    ref.meta["extractor"] = features.extractor_info(random_conv)
    result = evaluation.evaluate_generators(
        gens, ref, 10, random_conv, seed=5, metrics=("fid", "kid"),
        batch_size=4, kid_subsets=3, progress=False)
    assert abs(result["fid"]) < 1e-9 * np.trace(ref.sigma)
    assert result["num_samples"] == 10 and "kid_std" in result
    with pytest.raises(ValueError, match="computed with"):
        evaluation.evaluate_generators(
            gens, ref, 4, features.RandomConvFeatures(seed=9),
            progress=False)
    assert evaluation.metric_name("fid", 10000) == "fid10k"
    assert evaluation.metric_name("kid", 2500) == "kid2500"
