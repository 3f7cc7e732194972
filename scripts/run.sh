#!/usr/bin/env bash
# Set up archc in a venv (first run only) and run it: `bash scripts/run.sh build specs/resnet50.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/archc ]; then
    python3 -m venv .venv
    echo "installing archc into .venv (first run only; log: .venv/pip.log)..."
    .venv/bin/python -m pip install --disable-pip-version-check -e . >.venv/pip.log 2>&1 \
        || { cat .venv/pip.log; exit 1; }
fi
exec .venv/bin/archc "$@"
