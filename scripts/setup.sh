#!/usr/bin/env bash
# Create .venv (if needed) and install jodiffusion with its test tools (JODIFFUSION_SETUP=run: without
# them). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch/torchvision first: on the project's machines these exact releases install from a local copy.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
fi
# JODIFFUSION_SETUP=run (scripts/demo.sh): the package alone, without the test tools.
if [ "${JODIFFUSION_SETUP:-dev}" = "run" ]; then
  .venv/bin/pip install -q -e . 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import jodiffusion, torch; print('jodiffusion', jodiffusion.__version__, '| torch', torch.__version__)"
  exit 0
fi
.venv/bin/pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
# mmengine (whose Config reads the export-mmseg config in the tests) without its declared opencv-python, a
# large binary wheel that mmengine.Config never imports; its pure-Python needs come with the dev extra.
if ! .venv/bin/python -c "import mmengine.config" 2>/dev/null; then
  .venv/bin/pip install -q --no-deps 'mmengine>=0.10,<0.11' 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/python -c "import webdataset, mmengine.config"  # fail here, not in a skipped test
# Best effort: headless Chromium for the test that opens the demo's HTML report (skipped without it).
# JODIFFUSION_SKIP_CHROMIUM=1 leaves the system's packages alone.
if [ "${JODIFFUSION_SKIP_CHROMIUM:-0}" != "1" ]; then
  bash scripts/install_chromium.sh || echo "note: headless Chromium is not installed; the report's browser test will be skipped"
fi
.venv/bin/python -c "import jodiffusion, torch; print('jodiffusion', jodiffusion.__version__, '| torch', torch.__version__)"
