#!/usr/bin/env bash
# Runs Shovel's whole test suite: Rust unit and integration tests (engine against llama.cpp's
# reference outputs, HTTP API, CLI), then the official OpenAI Python SDK against a real server.
#
# The built-in models are fetched once into $SHOVEL_HOME (default ~/.shovel) by the project's
# own `shovel pull`; the Python tools go into .venv. Everything else runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"

echo "== build"
cargo build --workspace --bins --tests

echo "== models (cached in $SHOVEL_HOME)"
./target/debug/shovel pull smollm2-135m-instruct gemma3-270m all-minilm-l6-v2

echo "== cargo test"
cargo test --workspace

echo "== openai SDK tests"
if [ ! -x .venv/bin/pytest ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
SHOVEL_BIN="$PWD/target/debug/shovel" .venv/bin/pytest -q tests/python
