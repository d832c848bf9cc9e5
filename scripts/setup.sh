#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: Debian's Fashion-MNIST files, then a
# virtualenv (.venv) with keras-sns and its test tools. The virtualenv is rebuilt only
# when pyproject.toml changes, so a second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

if [ ! -f "$FMNIST" ] && [ -z "${KERAS_SNS_FASHION_MNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing; run 'sudo apt-get install dataset-fashion-mnist'" \
         "or set KERAS_SNS_FASHION_MNIST_DIR to a folder with its gzipped IDX files" >&2
  fi
fi

stamp="$VENV/.keras-sns-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $VENV and installing keras-sns (a few minutes the first time)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  rm -f "$VENV"/.keras-sns-*
  touch "$stamp"
fi
