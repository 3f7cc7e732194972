#!/usr/bin/env bash
# Set up everything the test suite needs (a venv with archc[test], Graphviz's `dot` where
# we can install it) and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
echo "installing archc[test] into .venv (log: .venv/pip.log)..."
.venv/bin/python -m pip install --disable-pip-version-check -e '.[test]' >.venv/pip.log 2>&1 \
    || { cat .venv/pip.log; exit 1; }
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing graphviz (for diagram tests)..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
            || echo "could not install graphviz; diagram rendering tests will be skipped"
    else
        echo "graphviz's dot is not installed; diagram rendering tests will be skipped"
    fi
fi
if command -v npm >/dev/null 2>&1 && [ ! -e .cache/lsp/node_modules/yaml-language-server ]; then
    echo "installing yaml-language-server into .cache/lsp (for the editor-schema test)..."
    mkdir -p .cache/lsp
    npm install --silent --no-audit --no-fund --prefix .cache/lsp yaml-language-server >/dev/null 2>&1 \
        || echo "could not install yaml-language-server; its test will be skipped"
fi
exec .venv/bin/python -m pytest "$@"
