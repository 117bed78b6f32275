#!/usr/bin/env bash
# Installs the offline data sets that the experiments and some tests read:
# Fashion-MNIST from the Debian package dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist/*-ubyte.gz). Needs root (or sudo) and
# the Debian package index; does nothing when the files are already there.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST already installed in $DIR"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
ls "$DIR"/train-images-idx3-ubyte.gz "$DIR"/t10k-images-idx3-ubyte.gz
echo "Fashion-MNIST installed in $DIR"
