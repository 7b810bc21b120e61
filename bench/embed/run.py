"""Embedding benchmark, side by side: Shovel's encoder (`shovel bench all-minilm-l6-v2`) against
PyTorch + transformers fp32 (the stack sentence-transformers runs on) on all-MiniLM-L6-v2, the
same threads, 24-token inputs, batch 1 and batch 32, runs alternating; medians. Writes the
`embed` section of docs/BENCHMARKS.md. Not a test: it asserts nothing.

Run through scripts/bench_embed.sh, which builds Shovel and the anchor's environment."""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from sections import cpu_name, write_section  # noqa: E402

BIN = ROOT / "target" / "release" / "shovel"
MODEL = "all-minilm-l6-v2"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    home = pathlib.Path(os.environ.get("SHOVEL_HOME", pathlib.Path.home() / ".shovel"))
    model_dir = home / "models" / MODEL / "model"
    env = dict(os.environ, SHOVEL__ENGINE__THREADS=str(a.threads))
    rows = {"shovel": [], "torch": []}
    for r in range(a.rounds):
        out = subprocess.run([str(BIN), "bench", MODEL], env=env, check=True, capture_output=True, text=True).stdout
        s = json.loads(out.strip().splitlines()[-1])
        rows["shovel"].append({"batch1": s["embed_texts_s_batch1"], "batch32": s["embed_texts_s_batch32"]})
        out = subprocess.run([a.torch_python, str(ROOT / "bench/embed/torch_anchor.py"), str(model_dir), str(a.threads), "24"], check=True, capture_output=True, text=True).stdout
        rows["torch"].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}: shovel {rows['shovel'][-1]}  torch {rows['torch'][-1]}", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("batch1", "batch32")} for k, v in rows.items()}
    lines = [
        "## Embeddings",
        "",
        "Written by `scripts/bench_embed.sh` (rerun it to refresh). all-MiniLM-L6-v2 (f32 weights) through",
        "Shovel's encoder against PyTorch + transformers fp32, the stack sentence-transformers runs on, on",
        f"the same inputs (24 tokens each) with {a.threads} threads, runs alternating; medians of {a.rounds} rounds.",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} vCPU, {a.threads} threads",
        "",
        "| measure | PyTorch | Shovel | ratio |",
        "|---|---:|---:|---:|",
    ]
    for m, label in (("batch1", "texts/s, one text per call"), ("batch32", "texts/s, 32 texts per call")):
        lines.append(f"| {label} | {med['torch'][m]:.1f} | {med['shovel'][m]:.1f} | {med['shovel'][m] / med['torch'][m]:.2f}x |")
    lines += ["", "Raw rounds:", "", "```"] + [f"{k:7s} {v}" for k, vs in rows.items() for v in vs] + ["```"]
    write_section("embed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
