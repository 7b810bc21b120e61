#!/usr/bin/env bash
# Held-out accuracy of a PEFT-trained adapter beside Shovel's, on the Ask-Data task (issue 4's
# "tuned model's held-out accuracy no worse than PEFT's"): PyTorch + PEFT LoRA (fp32,
# bench/train/peft_anchor.py) trains on the same teaching set with the demo's recipe (r 16,
# alpha 32, the seven projections, batch 4, max length 1024, 2 epochs, lr 2e-3, seed 42); Shovel
# imports its adapter and grades it with the same pipeline as its own (`askdata-smollm2`, made by
# `shovel demo askdata`, which must have run on this SHOVEL_HOME), and writes the
# `train-accuracy` section of docs/BENCHMARKS.md. Not a test. About 20 minutes on 2 cores, most of
# it PEFT's training.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SHOVEL_HOME="${SHOVEL_HOME:-$HOME/.shovel}"
. scripts/peft_venv.sh
cargo build --release --bin shovel
S=./target/release/shovel
$S pull smollm2-135m-instruct
$S models | grep -q '^askdata-smollm2' || { echo "askdata-smollm2 is not registered: run 'shovel demo askdata' first" >&2; exit 1; }
# The adapter stays under SHOVEL_HOME: the registered model serves from its directory.
work="$SHOVEL_HOME/bench/askdata-peft"
rm -rf "$work" && mkdir -p "$work"
$S askdata teach-data "$work/train.jsonl"
"$VENV/bin/python" bench/train/peft_anchor.py "$SHOVEL_HOME/models/smollm2-135m-instruct/model.gguf" "$work/train.jsonl" \
  --epochs 2 --lr 2e-3 --max-len 1024 --save "$work/adapter" > "$work/peft.json"
$S rm askdata-peft >/dev/null 2>&1 || true
$S import "$work/adapter" --base smollm2-135m-instruct --name askdata-peft
python3 bench/train/askdata_accuracy.py --peft-json "$work/peft.json" "$@"
