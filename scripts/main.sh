#!/usr/bin/env bash
# The main job, from nothing: set up, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Probe the embedded Whisper tiny.en encoder for music and speech concepts (report in runs/main).
exec .venv/bin/soundlens probe whisper-tiny.en --concepts notes,chords,voices --n 240 \
  --trim --threads 2 --out runs/main "$@"
