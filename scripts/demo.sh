#!/usr/bin/env bash
# Set everything up and run the demo on the embedded shapes dataset (CPU, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/jodiffusion demo --out "${1:-runs/demo}" --overwrite
