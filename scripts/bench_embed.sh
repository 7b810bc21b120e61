#!/usr/bin/env bash
# Side-by-side embedding benchmark: Shovel's encoder against PyTorch + transformers on
# all-MiniLM-L6-v2; writes the `embed` section of docs/BENCHMARKS.md. Not a test.
#
# The anchor's environment is the fine-tuning benchmark's (.bench/peft-venv: torch, transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"
. scripts/peft_venv.sh

echo "== building shovel (release)"
cargo build --release --bin shovel
./target/release/shovel pull all-minilm-l6-v2

exec python3 bench/embed/run.py --torch-python "$VENV/bin/python" "$@"
