"""FID feature extractors on the offline ImageNet networks
(features.ImageNetFeatures): shapes, determinism, the glue against the
networks called directly, and FIDs that behave (0 for a set against
itself, growing with added noise). Skipped without the weights
(`bash tools/install_weights.sh`)."""

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf.metrics import features
from bncr_tf.metrics import fid
from bncr_tf.pretrained import weights as weights_lib

WEIGHT_SET = {"vgg16_imagenet": "lpips_vgg", "alexnet_imagenet": "lpips_alex",
              "efficientnet_lite0_imagenet": "efficientnet_lite0"}
DIM = {"vgg16_imagenet": 512, "alexnet_imagenet": 256,
       "efficientnet_lite0_imagenet": 1280}
KINDS = tuple(WEIGHT_SET)


def _need(kind):
    reason = weights_lib.missing_reason(WEIGHT_SET[kind])
    if reason:
        pytest.skip(reason)


_CACHE = {}


def _extractor(kind, image_size=features.IMAGENET_SIZE, batch_size=8):
    _need(kind)
    key = (kind, image_size, batch_size)
    if key not in _CACHE:
        _CACHE[key] = features.make_extractor(kind, batch_size=batch_size) \
            if image_size == features.IMAGENET_SIZE else \
            features.ImageNetFeatures(kind, batch_size=batch_size,
                                      image_size=image_size)
    return _CACHE[key]


@pytest.fixture(scope="module")
def patches():
    from bncr_tf import data
    images, _ = data.load_clean_uint8("builtin:skimage_patches:count=48", 32)
    return images


def test_registry_lists_the_imagenet_extractors():
    for kind in KINDS:
        assert kind in features.EXTRACTORS
        assert kind in features.IMAGENET_EXTRACTORS


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_determinism_and_fingerprint(kind, patches):
    ex = _extractor(kind, batch_size=3)
    out = ex(patches[:5])
    assert out.shape == (5, DIM[kind]) and out.dtype == np.float64
    assert np.all(np.isfinite(out)) and np.std(out) > 0
    np.testing.assert_array_equal(ex(patches[:5]), out)
    # Batch split does not matter (3 + 2 above, 5 at once here).
    other = _extractor(kind, batch_size=8)
    np.testing.assert_allclose(other(patches[:5]), out, rtol=1e-4,
                               atol=1e-5 * np.abs(out).max())
    assert ex(patches[:0]).shape == (0, DIM[kind])
    info = features.extractor_info(ex)
    assert info["comparable"] is False and info["name"] == kind
    pinned = weights_lib.WEIGHT_SETS[WEIGHT_SET[kind]].content_sha256
    assert info["fingerprint"] == (f"{kind}-224px-{WEIGHT_SET[kind]}-"
                                   f"sha256:{pinned}")


@pytest.mark.parametrize("kind", ["vgg16_imagenet", "alexnet_imagenet"])
def test_torchvision_glue_against_direct_call(kind, patches):
    """At the network's own size the resize is the identity: the features
    are the last tap of the network on ImageNet-normalised [0, 1] RGB,
    averaged over positions (normalisation written out here in numpy)."""
    ex = _extractor(kind, image_size=48)
    images = np.concatenate([patches[:2], patches[2:4]], axis=2)[:, :, :48]
    images = np.pad(images, ((0, 0), (8, 8), (0, 0), (0, 0)), mode="edge")
    assert images.shape == (2, 48, 48, 3)
    x = (images / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225])
    tap = ex.model(tf.constant(x, tf.float32))[-1].numpy()
    np.testing.assert_allclose(ex(images), tap.mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-5 * np.abs(tap).max())


def test_efficientnet_pre_logits_feed_the_classifier():
    """The 1280-d features are what the ImageNet classifier reads: its fc
    on them classifies scikit-image's `coffee` as 967 espresso (as
    tests/test_pretrained.py finds through the full model)."""
    skimage_data = pytest.importorskip("skimage.data")
    ex = _extractor("efficientnet_lite0_imagenet")
    img = skimage_data.coffee()
    h, w = img.shape[:2]
    side = min(h, w)
    crop = img[(h - side) // 2:(h + side) // 2,
               (w - side) // 2:(w + side) // 2]
    feats = ex(crop[None])
    logits = ex.model.fc(tf.constant(feats, tf.float32)).numpy()
    assert int(np.argmax(logits)) == 967
    resized = tf.image.resize(tf.cast(crop[None], tf.float32), [224, 224],
                              method="bilinear", antialias=True)
    np.testing.assert_allclose(logits, ex.model(resized).numpy(), rtol=1e-4,
                               atol=1e-4)


def _fid(ex, a, b):
    mu1, s1 = fid.feature_statistics(ex(a))
    mu2, s2 = fid.feature_statistics(ex(b))
    return fid.frechet_distance(mu1, s1, mu2, s2)


def _fid_checks(ex, images):
    """FID(A, A) = 0 (relative to the features' scale) and FID(A, A +
    Gaussian noise of sigma 5, 15, 40 grey levels) strictly grows."""
    feats = ex(images)
    scale = np.trace(np.cov(feats, rowvar=False))
    assert abs(_fid(ex, images, images)) < 1e-6 * scale
    rng = np.random.default_rng(0)
    values = []
    for sigma in (5.0, 15.0, 40.0):
        noisy = np.clip(np.rint(images + sigma * rng.standard_normal(
            images.shape)), 0, 255).astype(np.uint8)
        values.append(_fid(ex, images, noisy))
    assert 0 < values[0] < values[1] < values[2], values
    return values


@pytest.mark.parametrize("kind", ["efficientnet_lite0_imagenet",
                                  "alexnet_imagenet"])
def test_fid_zero_against_itself_and_grows_with_noise(kind, patches):
    _fid_checks(_extractor(kind), patches[:24])


def test_fid_vgg16_small_input(patches):
    """VGG16 at 224 px runs ~2 images/s on the shared CPUs; here at 64 px
    (the 224 px check is the slow test below)."""
    _fid_checks(_extractor("vgg16_imagenet", image_size=64), patches[:24])


@pytest.mark.slow
def test_fid_vgg16_at_224(patches):
    _fid_checks(_extractor("vgg16_imagenet"), patches[:24])


def test_unknown_or_missing_weights_are_user_errors(tmp_path):
    from bncr_tf.errors import UserError
    with pytest.raises(UserError, match="unknown"):
        features.ImageNetFeatures("resnet_imagenet")
    with pytest.raises(UserError, match="install_weights"):
        features.make_extractor("efficientnet_lite0_imagenet",
                                weights_dir=str(tmp_path))
