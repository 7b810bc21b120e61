#!/usr/bin/env bash
# Runs Shovel's whole test suite: Rust unit and integration tests (engine against llama.cpp's
# reference outputs, HTTP API, CLI), then the official OpenAI Python SDK against a real server.
#
# The built-in models are fetched once into $SHOVEL_HOME (default ~/.shovel) by the project's
# own `shovel pull`; the Python tools go into .venv. A throwaway PostgreSQL server (when its
# binaries are installed; required under CI) serves the Ask-Data connector test. Everything else
# runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"

echo "== build"
cargo build --workspace --bins --tests

echo "== models (cached in $SHOVEL_HOME)"
./target/debug/shovel pull smollm2-135m-instruct gemma3-270m all-minilm-l6-v2

echo "== PostgreSQL server for the Ask-Data connector test"
PG_DIR=$(mktemp -d)
trap 'scripts/pg_test_server.sh stop "$PG_DIR"; rm -rf "$PG_DIR"' EXIT
if SHOVEL_TEST_PG_URL=$(scripts/pg_test_server.sh start "$PG_DIR"); then
  export SHOVEL_TEST_PG_URL
  echo "$SHOVEL_TEST_PG_URL"
elif [ -n "${CI:-}" ]; then
  echo "CI runs the PostgreSQL connector test: install postgresql (.ci/run does)" >&2
  exit 1
else
  echo "no PostgreSQL server here (apt-get install postgresql): its connector test is skipped"
fi

echo "== cargo test"
cargo test --workspace

echo "== openai SDK tests"
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
SHOVEL_BIN="$PWD/target/debug/shovel" .venv/bin/pytest -q tests/python
