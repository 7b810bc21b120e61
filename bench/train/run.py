"""Fine-tuning benchmark, side by side in one run: `shovel tune` against PyTorch + PEFT LoRA
(fp32) on the same GGUF, the same 100 examples and the same recipe; then adapter serving: 8
concurrent requests spread over 4 adapters against 8 to the base. Writes the `train` section of
docs/BENCHMARKS.md. Not a test: it asserts nothing.

Run through scripts/bench_train.sh, which builds Shovel and the anchor's environment."""
import argparse
import datetime
import json
import os
import pathlib
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "train"))
from sections import cpu_name, write_section  # noqa: E402
import make_data  # noqa: E402

BIN = ROOT / "target" / "release" / "shovel"
BASE = "smollm2-135m-instruct"


def bf16_kernel():
    """Which kernel `shovel tune` multiplies on here, by default (`train.amx = true`)."""
    flags = set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    if os.environ.get("SHOVEL__TRAIN__AMX", "true") != "false" and {"amx_tile", "amx_bf16"} <= flags:
        return "Intel AMX tiles"
    return "AVX512-BF16" if "avx512_bf16" in flags else "no bf16 instructions: f32"


def write_data(d):
    train, valid = d / "train.jsonl", d / "valid.jsonl"
    with open(train, "w", encoding="utf-8") as f:
        rng = random.Random(7)
        for _ in range(100):
            f.write(json.dumps(make_data.example(rng), ensure_ascii=False) + "\n")
    with open(valid, "w", encoding="utf-8") as f:
        rng = random.Random(1234)
        for _ in range(20):
            f.write(json.dumps(make_data.example(rng), ensure_ascii=False) + "\n")
    return train, valid


def prepare(cache, prefix):
    """A fresh work directory with a Shovel home that has the base imported from `cache`, and
    the data: (GGUF path, work dir, home, train file, validation file)."""
    gguf = pathlib.Path(cache) / "models" / BASE / "model.gguf"
    work = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    home = work / "home"
    home.mkdir()
    subprocess.run([str(BIN), "import", str(gguf), "--name", BASE], env=dict(os.environ, SHOVEL_HOME=str(home)), check=True, capture_output=True)
    train, valid = write_data(work)
    return gguf, work, home, train, valid


def run_shovel(home, train, valid, a, seed=42):
    cmd = [str(BIN), "tune", "--model", BASE, "--data", str(train), "--val", str(valid), "--epochs", str(a.epochs),
           "--batch-size", "4", "--max-len", "256", "--lora-r", "16", "--lora-alpha", "32", "--seed", str(seed), "--suffix", f"bench{seed}", "--json"]
    env = dict(os.environ, SHOVEL_HOME=str(home), SHOVEL__ENGINE__THREADS=str(a.threads))
    t0 = time.time()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    wall = time.time() - t0
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return res


def run_peft(gguf, train, valid, a, seed=42):
    cmd = [a.peft_python, str(ROOT / "bench" / "train" / "peft_anchor.py"), str(gguf), str(train), str(valid),
           "--epochs", str(a.epochs), "--batch", "4", "--max-len", "256", "--r", "16", "--alpha", "32", "--threads", str(a.threads), "--lr", "1e-3",
           "--seed", str(seed)]
    t0 = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = time.time() - t0
    return res


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def wave(url, models, max_tokens):
    """Sends one request per entry of `models` at once; returns completion tokens per second."""
    out = [0] * len(models)

    def one(i, m):
        r = post(url + "/v1/chat/completions", {"model": m, "max_tokens": max_tokens, "temperature": 0,
                                                "messages": [{"role": "user", "content": f"Write a long story about a lighthouse keeper, part {i}."}]})
        out[i] = r["usage"]["completion_tokens"]

    ts = [threading.Thread(target=one, args=(i, m)) for i, m in enumerate(models)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(out) / (time.time() - t0)


def adapters_vs_base(home, adapter_dir, a):
    env = dict(os.environ, SHOVEL_HOME=str(home), SHOVEL__ENGINE__THREADS=str(a.threads), RUST_LOG="warn")
    names = [f"bench-adapter-{i}" for i in range(4)]
    for n in names:
        subprocess.run([str(BIN), "import", str(adapter_dir), "--name", n, "--base", BASE], env=env, check=True, capture_output=True)
    port = 18000 + random.randrange(1000)
    log = open(home / "serve.log", "w")
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # Warm: load the base and every adapter.
        wave(url, [BASE] + names, 4)
        base, mixed = [], []
        for _ in range(a.rounds):
            base.append(wave(url, [BASE] * 8, 64))
            mixed.append(wave(url, [names[i % 4] for i in range(8)], 64))
        return base, mixed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peft-python", required=True)
    ap.add_argument("--cache", default=os.environ.get("SHOVEL_HOME", str(pathlib.Path.home() / ".shovel")))
    a = ap.parse_args()
    gguf, work, home, train, valid = prepare(a.cache, "shovel-bench-train-")
    print("== shovel tune", flush=True)
    ours = run_shovel(home, train, valid, a)
    print({k: v for k, v in ours.items() if k != "losses"}, flush=True)
    print("== PEFT anchor", flush=True)
    theirs = run_peft(gguf, train, valid, a)
    print({k: v for k, v in theirs.items() if k != "losses"}, flush=True)
    print("== adapters vs base, 8 concurrent requests", flush=True)
    adapter_dir = home / "models" / "ft" / ours["job"]
    base_tps, mixed_tps = adapters_vs_base(home, adapter_dir, a)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    b, m = med(base_tps), med(mixed_tps)
    o_tps, t_tps = ours["tokens_per_second"], theirs["tokens_per_s"]
    o_rss, t_rss = ours["peak_rss_mb"], theirs["peak_rss_mb"]
    every = max(1, len(ours["losses"]) // 10)
    curve = "\n".join(f"| {i + 1} | {theirs['losses'][i]:.4f} | {ours['losses'][i]:.4f} |" for i in range(0, len(ours["losses"]), every))
    text = f"""## Fine-tuning (LoRA SFT)

Written by `scripts/bench_train.sh`. `shovel tune` against PyTorch {theirs['torch']} + transformers + PEFT
LoRA in fp32 (the anchor, `bench/train/peft_anchor.py`), one after the other in one run, on the same
GGUF (SmolLM2-135M-Instruct), the same 100 examples
(`bench/train/make_data.py`: question -> JSON with SQL and a chart type) and the same recipe: r 16,
alpha 32, all seven projections, batch 4, max length 256, {a.epochs} epochs, AdamW lr 1e-3 with 5%
warmup and cosine decay, clipping 1.0, loss on assistant tokens only, {a.threads} threads. Shovel
trains in bf16 products with f32 accumulation ({bf16_kernel()}); the anchor in fp32. Tokens/s counts
non-padding tokens over the training loop; wall time includes loading.

- Date: {datetime.date.today().isoformat()}
- Machine: {cpu_name()}, {os.cpu_count()} vCPU

| measure | PEFT (fp32) | Shovel | ratio | goal |
|---|---:|---:|---:|---|
| training tokens/s | {t_tps:.0f} | {o_tps:.0f} | {o_tps / t_tps:.2f}x | >= 3x |
| peak RSS | {t_rss:.0f} MB | {o_rss:.0f} MB | {o_rss / t_rss:.2f}x | <= 0.25x |
| whole job, 100 examples x {a.epochs} epochs (wall) | {theirs['wall_s']:.0f} s | {ours['wall_s']:.0f} s | {ours['wall_s'] / theirs['wall_s']:.2f}x | < 120 s |
| final training loss | {theirs['final_loss']:.4f} | {ours['losses'][-1]:.4f} | | no worse |
| validation loss (20 held-out examples) | {theirs['valid_loss']:.4f} | {ours['valid_losses'][-1] if ours['valid_losses'] else float('nan'):.4f} | | no worse |

| Shovel serving | 8 requests to the base | 8 requests over 4 adapters | ratio | goal |
|---|---:|---:|---:|---|
| completion tokens/s, 64 tokens each, concurrent | {b:.1f} | {m:.1f} | {m / b:.2f}x | >= 0.85x |

Loss per step (every {every}th step):

| step | PEFT | Shovel |
|---:|---:|---:|
{curve}

The losses above are one seed per side, and each program draws its own example order and starting
adapter from it: the last step's loss moves by up to 10x between seeds. Means over five seeds: the
section "Fine-tuning loss over seeds" (`bench/train/seeds.py`); the same batches from the same start:
"Fine-tuning: PEFT replaying Shovel's batches and start" (`bench/train/replay.py`).

Held-out task accuracy of a PEFT-trained adapter beside Shovel's: the section "Fine-tuning: held-out accuracy against PEFT"
(`bench/train/askdata_peft.sh`).
"""
    write_section("train", text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
