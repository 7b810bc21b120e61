#!/usr/bin/env bash
# Side-by-side fine-tuning benchmark: `shovel tune` against PyTorch + PEFT LoRA (the anchor) on
# the same model, data and recipe, plus adapter-serving throughput; writes the `train` section of
# docs/BENCHMARKS.md. Not a test: it asserts nothing.
#
# The anchor's environment (torch, transformers, peft, gguf from PyPI; about 3 GB) goes into
# .bench/peft-venv on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"
. scripts/peft_venv.sh

echo "== building shovel (release)"
cargo build --release --bin shovel
./target/release/shovel pull smollm2-135m-instruct

exec python3 bench/train/run.py --peft-python "$VENV/bin/python" "$@"
