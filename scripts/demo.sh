#!/usr/bin/env bash
# Set everything up and run the demo on the embedded shapes dataset (CPU, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
JODIFFUSION_SKIP_CHROMIUM=1 bash scripts/setup.sh  # the demo needs no browser (only a test does)
.venv/bin/jodiffusion demo --out "${1:-runs/demo}" --overwrite
