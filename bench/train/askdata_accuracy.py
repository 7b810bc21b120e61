"""Grades two Ask-Data adapters side by side with `shovel askdata eval --json` on the shipped
evaluation set and the four fresh sets, and writes the `train-accuracy` section of
docs/BENCHMARKS.md (or, with --print, prints it). Run by bench/train/askdata_peft.sh after it
has trained and imported the PEFT adapter; standard library only. Not a test."""
import argparse
import datetime
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from sections import cpu_name, write_section  # noqa: E402

SETS = [("", "45 evaluation questions (`eval.jsonl`, the development set)"), ("fresh", "`fresh.jsonl` (30)"), ("fresh2", "`fresh2.jsonl` (30)"),
        ("fresh3", "`fresh3.jsonl` (30)"), ("fresh4", "`fresh4.jsonl` (28, written after the cues and the query shape)")]


def grade(shovel, model, name):
    cmd = [shovel, "askdata", "eval", "--model", model, "--json"] + (["--file", name] if name else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    s = json.loads(out)["score"]
    return 100.0 * s["both_ok"] / s["n"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shovel", default=str(ROOT / "target" / "release" / "shovel"))
    ap.add_argument("--peft-json", required=True, help="the anchor's output line (bench/train/peft_anchor.py)")
    ap.add_argument("--ours", default="askdata-smollm2")
    ap.add_argument("--theirs", default="askdata-peft")
    ap.add_argument("--print", action="store_true", help="print the section instead of writing it")
    a = ap.parse_args()
    peft = json.loads(pathlib.Path(a.peft_json).read_text())
    rows = []
    for name, label in SETS:
        ours, theirs = grade(a.shovel, a.ours, name), grade(a.shovel, a.theirs, name)
        rows.append(f"| {label} | {theirs:.1f}% | {ours:.1f}% | {ours - theirs:+.1f} |")
        print(rows[-1], flush=True)
    text = f"""## Fine-tuning: held-out accuracy against PEFT (Ask-Data)

Written by `bench/train/askdata_peft.sh`. PyTorch {peft.get("torch", "?")} + PEFT LoRA in fp32 trains on the
Ask-Data teaching set (`shovel askdata teach-data`, 266 examples) with the demo's recipe (r 16, alpha 32,
the seven projections, batch 4, max length 1024, 2 epochs, AdamW lr 2e-3, 5% warmup, cosine,
seed 42); Shovel imports its adapter (`shovel import DIR --base smollm2-135m-instruct`) and grades
it with the same pipeline (prompt, cues, query shape, decline threshold, greedy decoding) as its own
adapter `{a.ours}` from `shovel demo askdata`. Result and chart both right.

- Date: {datetime.date.today()}
- Machine: {cpu_name()}, 2 threads
- PEFT's final training loss {peft["final_loss"]:.4f}, {peft["steps"]} steps

| set | PEFT adapter | Shovel adapter | difference (points) |
|---|---:|---:|---:|
""" + "\n".join(rows) + """

The cues and the query shape were developed on the Shovel adapter's misses on the development
sets (`eval`, `fresh`..`fresh3`), which may favour it there; `fresh4` was written after them.
"""
    if a.print:
        print(text)
    else:
        write_section("train-accuracy", text)


if __name__ == "__main__":
    main()
