"""Experiment 2 of issue 7: GAN vs the robust variants on Fashion-MNIST.

One command reproduces every number of the comparison table of
docs/results.md:

    python tools/run_fmnist_comparison.py --out=results/fmnist

Fashion-MNIST (Debian package dataset-fashion-mnist; `tools/install_data.sh`
installs it) is read at 32 px (28 px zero-padded, grey replicated to RGB),
its first 20k training images degraded once at load by settings D (blur),
J (JPEG) and N (blur + camera noise + JPEG), and each model of --runs is
trained with narrow networks (`python -m bncr_tf.train` subprocesses,
--jobs at a time; the command of each is written to
`<out>/logs/<name>.command.txt`). An interrupted
experiment continues when the same command is run again: finished runs
are kept, unfinished ones resume from their last checkpoint.

Metric: FID between 5000 clean images of the EMA G_x and the clean
Fashion-MNIST test set (10k), on the 128-d penultimate features of a small
classifier trained on the clean training set by
tools/train_fmnist_classifier.py (trained first if --classifier does not
exist; its test accuracy is reported). These FIDs are comparable with each
other, not with any published Inception FID. Also reported: the FID of the
degraded training images themselves (what a GAN that reproduces its data
perfectly would score) and of the clean training images (the floor).

The restoration baselines are runs of the variants `deblur_gan` (D) and
`deblock_gan` (J): a plain GAN trained on the degraded images restored by
`bncr_tf.baselines` (Deblur+GAN†: Krishnan-Fergus with the true kernels;
Deblock+GAN: POCS deblocking, our substitute for Pointwise SA-DCT), e.g.
--runs=D:deblur_gan:0,J:deblock_gan:0. Their training sets are built once
under `<out>/data/`.

Outputs in --out: `summary.json`, `table.md`, `logs/` (command, log and
wall time of each run), and per run its directory with `fid.json` and the
decomposition grid (x | k | n | y) of its last step.

A preset of `tools/run_comparison.py` (issue 18): the same machinery
(`bncr_tf.comparison`) with Fashion-MNIST's data, the classifier's
features and Experiment 2's table (seeds averaged, FIDs only).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bncr_tf import comparison  # noqa: E402

DEFAULT_RUNS = ("N:gan:0,N:gan:1,N:ambientgan:0,N:bncrgan:0,N:bncrgan:1,"
                "D:gan:0,D:brgan:0,D:bncrgan:0,"
                "J:gan:0,J:crgan:0,J:bncrgan:0")
# Experiment 2's set-up (docs/results.md): 20k training images, the test
# set as reference, the classifier's features, 5000 samples.
DEFAULTS = {"out": "results/fmnist", "runs": DEFAULT_RUNS,
            "data": "fashion_mnist:train", "data_limit": 20000,
            "reference": "fashion_mnist:test", "reference_seed": 0,
            "extractor": "classifier", "fid_samples": 5000}

parse_runs = comparison.parse_runs
run_name = comparison.run_name
train_command = comparison.train_command
table = comparison.fmnist_table


def main(argv=None):
    return comparison.main(argv, __doc__, DEFAULTS, layout="fmnist")


if __name__ == "__main__":
    sys.exit(main())
