#!/usr/bin/env bash
# Set everything up and run the demo on the embedded shapes dataset (CPU, no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
JODIFFUSION_SETUP=run bash scripts/setup.sh  # the demo needs neither the test tools nor the browser
.venv/bin/jodiffusion demo --out "${1:-runs/demo}" --overwrite
