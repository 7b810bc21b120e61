"""`shovel tune` and the PEFT anchor on the same batches from the same start, step by step.

bench/train/seeds.py compares the two trainers over seeds, because each draws its own example
order and adapter starting values. Here the anchor replays Shovel's: the order of every epoch
and the initial A (B starts at zero on both), written by the `replay_plan` example for the
seed. Both run in f32 (Shovel with `train.precision = "f32"`), so what is left between their
losses is arithmetic order, and step 1 (the base model's loss on the first batch) must agree.
Writes the `train-replay` section of docs/BENCHMARKS.md. Not a test: it asserts nothing.

Usage: python bench/train/replay.py --peft-python .bench/peft-venv/bin/python [--seed 42]
(run `cargo build --release -p shovel-train --example replay_plan` and scripts/bench_train.sh's
set-up first)."""
import argparse
import datetime
import json
import os
import pathlib
import subprocess

import run  # noqa: E402  (bench/train/run.py: data, both runners)
from sections import cpu_name, write_section  # noqa: E402

PLAN = run.ROOT / "target" / "release" / "examples" / "replay_plan"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft-python", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=os.environ.get("SHOVEL_HOME", str(pathlib.Path.home() / ".shovel")))
    a = ap.parse_args()
    gguf, work, home, train, valid = run.prepare(a.cache, "shovel-bench-replay-")
    n = sum(1 for line in open(train, encoding="utf-8") if line.strip())
    subprocess.run([str(PLAN), str(gguf), str(n), str(a.seed), str(a.epochs), "16", "32", str(work)], check=True)
    os.environ["SHOVEL__TRAIN__PRECISION"] = "f32"
    ours = run.run_shovel(home, train, valid, a, a.seed)
    cmd = [a.peft_python, str(run.ROOT / "bench" / "train" / "peft_anchor.py"), str(gguf), str(train), str(valid), "--epochs", str(a.epochs), "--batch", "4",
           "--max-len", "256", "--r", "16", "--alpha", "32", "--threads", str(a.threads), "--lr", "1e-3", "--seed", str(a.seed),
           "--order", str(work / "order.json"), "--init", str(work / "init")]
    theirs = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    lo, lt = ours["losses"], theirs["losses"]
    steps = len(lo)
    per_epoch = steps // a.epochs
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    rel = [abs(x - y) / max(abs(y), 1e-9) for x, y in zip(lo, lt)]
    shown = sorted({0, 1, 2, 4, 9, 19, 39, steps // 2, steps - 1})
    lines = [
        "## Fine-tuning: PEFT replaying Shovel's batches and start",
        "",
        "Written by `bench/train/replay.py`: the PEFT anchor (fp32) takes `shovel tune`'s example",
        f"order and initial adapter for seed {a.seed} (the `replay_plan` example), and Shovel runs in f32,",
        "on bench/train/run.py's data and recipe. The same batches from the same start: the losses",
        "differ only by arithmetic order, and by what that difference grows into over the run.",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} vCPU, {a.threads} threads",
        "",
        "| step | PEFT | Shovel | relative difference |",
        "|---:|---:|---:|---:|",
        *[f"| {i + 1} | {lt[i]:.5f} | {lo[i]:.5f} | {rel[i]:.1e} |" for i in shown],
        "",
        "| measure | PEFT | Shovel |",
        "|---|---:|---:|",
        f"| mean loss, first epoch | {mean(lt[:per_epoch]):.4f} | {mean(lo[:per_epoch]):.4f} |",
        f"| mean loss, last epoch | {mean(lt[-per_epoch:]):.4f} | {mean(lo[-per_epoch:]):.4f} |",
        f"| validation loss (20 held-out examples) | {theirs['valid_loss']:.4f} | {ours['valid_losses'][-1]:.4f} |",
    ]
    write_section("train-replay", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
