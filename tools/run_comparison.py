"""Issue 18: GAN against the robust models on natural colour patches, one
resumable command for the comparison table of docs/results.md
("Experiment 4"):

    python tools/run_comparison.py --out=results/comparison

Data: `builtin:skimage_patches:count=4096` (natural colour patches cut
from the photos scikit-image ships, seed 0; docs/data.md) at 32 px, each
setting's degradation applied once at load exactly as training does it in
memory. FID reference: 4096 other patches of the same photos (seed 1).
Runs (--runs, SETTING:MODEL:SEED): on D, J and N GAN, AmbientGAN,
P-AmbientGAN, BNCR-GAN and BNCR-GAN w/o L_AC, BR-GAN and Deblur+GAN† on
D, CR-GAN and Deblock+GAN on J, NR-GAN on `noise`; seeds 0, 1, 2 for GAN
and BNCR-GAN (the table reports the median seed, as the paper does, and
all three), one seed for the rest (`bncr_tf.comparison.COLOUR_RUNS`).

Metric: FID of --fid_samples images of each run's EMA G_x on the features
of --extractor (default `alexnet_imagenet`; also `vgg16_imagenet`,
`efficientnet_lite0_imagenet`, installed offline by
`bash tools/install_weights.sh`): NOT Inception FID, comparable between
the rows of one table only. On the same images, the degradation
statistics of `bncr_tf.metrics.degradation_stats` (noise level,
sharpness, JPEG blockiness), and for reference the FIDs and statistics of
the clean and degraded training images. The issue-18 criterion line:
on N, FID(GAN) <= 1.5 x FID(degraded N images) + 2.

--train_flags (e.g. small-scale hyper-parameters such as
`--r1_weight=1`) go to every run and are printed in table.md's header.
Rerunning the same command keeps finished runs, resumes unfinished ones
and reuses each run's cached scores (`bncr_tf.comparison`).

Outputs in --out: `summary.json`, `table.md`, `logs/` (command, log and
wall time of each run), `runs/<run>/` (its `fid.json` and decomposition
grid), `data/` (restored training sets of the restoration baselines) and
`cache/`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf import comparison  # noqa: E402

DEFAULTS = {"out": "results/comparison"}


def main(argv=None):
    return comparison.main(argv, __doc__, DEFAULTS, layout="full")


if __name__ == "__main__":
    sys.exit(main())
