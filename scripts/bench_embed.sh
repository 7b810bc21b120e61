#!/usr/bin/env bash
# Side-by-side embedding benchmark: Shovel's encoder against PyTorch + transformers on
# all-MiniLM-L6-v2; writes the `embed` section of docs/BENCHMARKS.md. Not a test.
#
# The anchor's environment is the fine-tuning benchmark's (.bench/peft-venv: torch, transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"
VENV="${PEFT_VENV:-.bench/peft-venv}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, transformers' 2>/dev/null; then
  echo "== installing the anchor (torch, transformers) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers peft gguf
fi

echo "== building shovel (release)"
cargo build --release --bin shovel
./target/release/shovel pull all-minilm-l6-v2

exec python3 bench/embed/run.py --torch-python "$VENV/bin/python" "$@"
