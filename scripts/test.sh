#!/usr/bin/env bash
# Set everything up, lint, check the layers (lint-imports: pyproject.toml [tool.importlinter]) and run the
# test suite (offline, CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/python -m pytest -q "$@"
