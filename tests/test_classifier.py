"""The Fashion-MNIST classifier tool and its FID feature extractor.

A fake Fashion-MNIST directory (IDX files, as the Debian package lays them
out) holds a learnable synthetic task: class c is a bright square of side
4 + 2c at a random place on a dim noisy background.
"""

import dataclasses
import gzip
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from bncr_tf.metrics import classifier
from bncr_tf.metrics import features
from bncr_tf.metrics import fid as fid_lib
from bncr_tf.training import config as config_lib
from bncr_tf.training.config import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "train_fmnist_classifier.py")
WIDTH, FEATURE_DIM, EPOCHS = 8, 16, 8


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_fmnist_classifier",
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _idx_bytes(array):
    """IDX encoding of a uint8 array (magic, big-endian sizes, data)."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _squares(labels, seed):
    """uint8 [N, 28, 28]: class c = a bright square of side 4 + 2c."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (len(labels), 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        side = 4 + 2 * int(label)
        y, x = rng.integers(0, 28 - side + 1, 2)
        image[y:y + side, x:x + side] = rng.integers(180, 256)
    return images


def _as_rgb32(images):
    """The loader's layout: zero-pad 28 -> 32, replicate to RGB."""
    return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None],
                     3, axis=-1)


def _write_split(directory, prefix, labels, seed, with_labels=True):
    (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(_squares(labels, seed))))
    if with_labels:
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(
            _idx_bytes(np.asarray(labels, np.uint8)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs the tool once in-process: (out dir, data dir, progress lines,
    summary, test labels)."""
    base = tmp_path_factory.mktemp("classifier")
    data_dir = base / "fashion"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    test_labels = rng.permutation(np.arange(300) % 10)
    _write_split(data_dir, "train", rng.permutation(np.arange(1200) % 10), 1)
    _write_split(data_dir, "t10k", test_labels, 2)
    out = base / "out"
    tool = _load_tool()
    lines = []
    args = tool.parse_args([
        f"--out={out}", f"--data=fashion_mnist:train:{data_dir}",
        f"--test_data=fashion_mnist:test:{data_dir}",
        f"--epochs={EPOCHS}", "--batch=32", "--seed=3",
        f"--width={WIDTH}", f"--feature_dim={FEATURE_DIM}"])
    summary = tool.run(args, log=lines.append)
    return out, data_dir, lines, summary, test_labels


def test_tool_trains_and_writes_model_and_summary(trained):
    out, data_dir, lines, summary, _ = trained
    assert sorted(os.listdir(out)) == ["classifier.json", "classifier.keras"]
    with open(out / "classifier.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(summary))
    # Chance is 0.1; the squares are easy to tell apart.
    assert saved["test_accuracy"] >= 0.7, saved
    assert saved["train_accuracy"] >= 0.7, saved
    assert saved["epochs"] == EPOCHS and len(saved["history"]) == EPOCHS
    assert saved["history"][-1]["loss"] < saved["history"][0]["loss"]
    assert saved["train_images"] == 1200 and saved["test_images"] == 300
    assert saved["data"] == f"fashion_mnist:train:{data_dir}"
    assert saved["test_data"] == f"fashion_mnist:test:{data_dir}"
    assert saved["seed"] == 3 and saved["seconds"] > 0
    expected = classifier.build_classifier(32, WIDTH, FEATURE_DIM)
    assert saved["parameters"] == expected.count_params()
    assert saved["model_sha256"] == classifier.sha256_file(
        str(out / "classifier.keras"))
    assert [line.split(":")[0] for line in lines
            if line.startswith("epoch")] == [
                f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert lines[-1].startswith(
        f"test accuracy {saved['test_accuracy']:.4f} (300 images)")


def test_saved_model_reproduces_accuracy(trained):
    out, _, _, summary, labels = trained
    model, path = classifier.load_classifier(str(out))
    assert path == str(out / "classifier.keras")
    images = _as_rgb32(_squares(labels, 2))
    assert classifier.accuracy(model, images, labels) == pytest.approx(
        summary["test_accuracy"], abs=1e-9)


def test_extractor_features(trained):
    out = trained[0]
    extractor = features.make_extractor(
        "classifier", classifier_path=str(out / "classifier.keras"))
    assert isinstance(extractor, classifier.ClassifierFeatures)
    assert extractor.name == "fmnist_classifier"
    assert extractor.comparable is False
    assert extractor.fingerprint == (
        "fmnist_classifier-" + classifier.sha256_file(
            str(out / "classifier.keras")))
    assert features.extractor_info(extractor)["comparable"] is False
    images = _as_rgb32(_squares(np.arange(37) % 10, 5))
    got = extractor(images)
    assert got.shape == (37, FEATURE_DIM) and got.dtype == np.float64
    assert np.all(got >= 0) and np.std(got) > 0  # ReLU, not constant
    assert np.array_equal(got, extractor(images))
    small = features.make_extractor("classifier", classifier_path=str(out),
                                    batch_size=5)
    assert small.batch_size == 5
    assert small.fingerprint == extractor.fingerprint
    np.testing.assert_allclose(small(images), got, rtol=1e-5, atol=1e-6)
    # extract_statistics feeds it like any extractor.
    stats = features.extract_statistics([images[:20], images[20:]], small,
                                        progress=False)
    assert stats.count == 37
    np.testing.assert_allclose(stats.mean(), got.mean(axis=0), rtol=1e-5,
                               atol=1e-6)


def test_fingerprint_follows_the_weights(trained, tmp_path):
    out = trained[0]
    copy = tmp_path / "copy" / "classifier.keras"
    copy.parent.mkdir()
    shutil.copy(out / "classifier.keras", copy)
    original = classifier.ClassifierFeatures(str(out))
    assert classifier.ClassifierFeatures(
        str(copy)).fingerprint == original.fingerprint
    model, _ = classifier.load_classifier(str(copy))
    layer = model.get_layer(classifier.FEATURES_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 1.5, bias])
    changed_path = tmp_path / "changed.keras"
    model.save(str(changed_path))
    changed = classifier.ClassifierFeatures(str(changed_path))
    assert changed.fingerprint != original.fingerprint
    images = _as_rgb32(_squares(np.arange(10), 6))
    assert not np.allclose(changed(images), original(images))


def test_extractor_errors(trained, tmp_path):
    out = trained[0]
    with pytest.raises(UserError, match="needs --classifier_path"):
        features.make_extractor("classifier")
    with pytest.raises(UserError, match="train_fmnist_classifier.py"):
        features.make_extractor(
            "classifier", classifier_path=str(tmp_path / "nope.keras"))
    with pytest.raises(UserError, match="train_fmnist_classifier.py"):
        classifier.ClassifierFeatures(str(tmp_path))  # no classifier.keras
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="is not a classifier"):
        classifier.ClassifierFeatures(str(garbage))
    import keras
    other = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Flatten(),
                              keras.layers.Dense(10, name="logits")])
    other.save(str(tmp_path / "other.keras"))
    with pytest.raises(UserError, match="is not a classifier"):
        classifier.ClassifierFeatures(str(tmp_path / "other.keras"))
    extractor = classifier.ClassifierFeatures(str(out))
    with pytest.raises(UserError, match="32 x 32"):
        extractor(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="32 x 32"):
        extractor(np.zeros((2, 32, 32), np.uint8))


def test_fid_on_classifier_features_separates_classes(trained):
    extractor = classifier.ClassifierFeatures(str(trained[0]))

    def stats(labels, seed):
        f = extractor(_as_rgb32(_squares(labels, seed)))
        return f.mean(axis=0), np.cov(f, rowvar=False)

    same_a = stats(np.arange(200) % 5, 10)  # classes 0-4
    same_b = stats(np.arange(200) % 5, 11)  # the same classes, new images
    other = stats(5 + np.arange(200) % 5, 12)  # classes 5-9
    within = fid_lib.frechet_distance(*same_a, *same_b)
    between = fid_lib.frechet_distance(*same_a, *other)
    assert 0 <= within and between > 10 * within, (within, between)


def test_training_is_seeded():
    import keras
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(64) % 10)
    images = _as_rgb32(_squares(labels, 7))

    def weights(seed):
        keras.utils.set_random_seed(seed)
        model = classifier.build_classifier(32, width=4, feature_dim=8)
        history = classifier.train_classifier(
            model, images, labels, epochs=1, batch_size=16, seed=seed,
            log=None)
        return model.get_weights(), history[0]["loss"]

    (w0, loss0), (w1, loss1) = weights(1), weights(1)
    assert loss0 == loss1
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1))
    w2, _ = weights(2)
    assert not all(np.array_equal(a, b) for a, b in zip(w0, w2))


def test_train_rejects_unlabelled_images():
    model = classifier.build_classifier(32, width=4, feature_dim=8)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="labels"):
        classifier.train_classifier(model, images, -np.ones(4, np.int64),
                                    epochs=1, log=None)
    with pytest.raises(ValueError, match="uint8"):
        classifier.train_classifier(model, images[:, :16, :16], np.zeros(4),
                                    epochs=1, log=None)


def test_tool_user_errors_exit_2(trained, tmp_path, capsys):
    tool = _load_tool()
    data_dir = trained[1]
    status = tool.main([f"--out={tmp_path / 'a'}",
                        f"--data=fashion_mnist:train:{tmp_path / 'missing'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot load fashion_mnist:train:")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    _write_split(unlabelled, "t10k", np.arange(10), 3, with_labels=False)
    status = tool.main([f"--out={tmp_path / 'b'}",
                        f"--data=fashion_mnist:train:{data_dir}",
                        f"--test_data=fashion_mnist:test:{unlabelled}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "no labels" in err[0], err
    assert not os.path.exists(tmp_path / "a")
    assert not os.path.exists(tmp_path / "b")
    with pytest.raises(SystemExit) as exit_info:
        tool.main([f"--out={tmp_path / 'c'}", "--epochs=0"])
    assert exit_info.value.code == 2
    assert "--epochs must be a positive integer" in capsys.readouterr().err


def test_flags_registered():
    assert "classifier" in features.EXTRACTORS
    field = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
    assert "classifier" in field["fid_extractor"].metadata["choices"]
    names = list(field)
    assert names[names.index("inception_path") + 1] == "classifier_path"
    assert config_lib.TrainConfig().classifier_path == ""
