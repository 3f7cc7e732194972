#!/usr/bin/env bash
# Set up archc in a venv (first run only) and run it: `bash scripts/run.sh build specs/resnet50.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/archc ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
fi
exec .venv/bin/archc "$@"
