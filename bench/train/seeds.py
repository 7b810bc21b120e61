"""Loss of `shovel tune` against PEFT over several seeds, on the data and recipe of
bench/train/run.py (100 examples, r 16, alpha 32, batch 4, max length 256, 3 epochs, lr 1e-3).

Why: one run per side compares two draws. The seed sets the order of the examples and the
adapters' starting values, which differ between the two programs, so the step losses are of
different batches (step 1 is the base model's loss on each side's first batch) and the last
step's loss moves by 4x from seed to seed. Compared here: the mean loss over the last epoch and
the validation loss (20 held-out examples), per seed, and their means. Writes the `train-seeds`
section of docs/BENCHMARKS.md. Not a test: it asserts nothing.

Usage: python bench/train/seeds.py --peft-python .bench/peft-venv/bin/python [--seeds 42 1 2]
[--rows FILE] (scripts/bench_train.sh builds the binary and the anchor's environment first).
Each seed's row is appended to --rows (default .bench/train-seeds.jsonl) as it finishes, and a
seed already there is not run again when its fingerprint (the shovel binary, the anchor and data
scripts, the machine, threads and epochs) matches this run's: a long run that stops loses at most
one seed, and a row from another build or machine is never reported as this one's."""
import argparse
import datetime
import hashlib
import json
import os
import pathlib
import statistics

import run  # noqa: E402  (bench/train/run.py: data, both runners)
from sections import cpu_name, write_section  # noqa: E402


def summary(losses, valid, steps_per_epoch):
    return {"last_epoch": statistics.mean(losses[-steps_per_epoch:]), "final": losses[-1], "valid": valid}


def fingerprint(a):
    """What a stored row must have been measured with to be reused."""
    h = hashlib.sha256()
    for f in [run.BIN, run.ROOT / "bench" / "train" / "peft_anchor.py", run.ROOT / "bench" / "train" / "run.py", run.ROOT / "bench" / "train" / "make_data.py"]:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return {"files": h.hexdigest()[:16], "cpu": cpu_name(), "threads": a.threads, "epochs": a.epochs}


def stored_rows(path, fp):
    """Rows of `path` measured under fingerprint `fp`, by seed; blank or cut lines are skipped."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and r.get("fingerprint") == fp:
                done[r["seed"]] = r
    return done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft-python", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=os.environ.get("SHOVEL_HOME", str(pathlib.Path.home() / ".shovel")))
    ap.add_argument("--rows", default=str(run.ROOT / ".bench" / "train-seeds.jsonl"), help="per-seed results, appended as each seed finishes; seeds already there are reused")
    a = ap.parse_args()
    rows_path = pathlib.Path(a.rows)
    fp = fingerprint(a)
    done = stored_rows(rows_path, fp)
    seeds = list(dict.fromkeys(a.seeds))
    prepared = None
    rows = []
    for seed in seeds:
        if seed in done:
            print(f"seed {seed}: reused from {rows_path}", flush=True)
            rows.append(done[seed])
            continue
        if prepared is None:
            prepared = run.prepare(a.cache, "shovel-bench-seeds-")
        gguf, _, home, train, valid = prepared
        ours = run.run_shovel(home, train, valid, a, seed)
        theirs = run.run_peft(gguf, train, valid, a, seed)
        per_epoch = len(ours["losses"]) // a.epochs
        row = {"seed": seed, "fingerprint": fp, "shovel": summary(ours["losses"], ours["valid_losses"][-1], per_epoch),
               "peft": summary(theirs["losses"], theirs["valid_loss"], per_epoch)}
        print(row, flush=True)
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        # A line cut by a crash is ended first, so this row is not glued onto it.
        cut = rows_path.exists() and rows_path.stat().st_size > 0 and not rows_path.read_bytes().endswith(b"\n")
        with rows_path.open("a") as f:
            f.write(("\n" if cut else "") + json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        rows.append(row)
    mean = lambda side, k: statistics.mean(r[side][k] for r in rows)  # noqa: E731
    sd = lambda side, k: f"{statistics.stdev(r[side][k] for r in rows):.4f}" if len(rows) > 1 else "-"  # noqa: E731
    lines = [
        "## Fine-tuning loss over seeds",
        "",
        "Written by `bench/train/seeds.py`: `shovel tune` (bf16 products where the CPU has them) and",
        "the PEFT anchor (fp32) on bench/train/run.py's data and recipe, once per seed each. The seed",
        "sets the order of the examples and the adapters' starting values, which the two programs",
        "draw differently, so single steps are of different batches: compare means.",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} vCPU, {a.threads} threads",
        "",
        "| seed | PEFT: last epoch mean | Shovel: last epoch mean | PEFT: last step | Shovel: last step | PEFT: validation | Shovel: validation |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {r['peft']['last_epoch']:.4f} | {r['shovel']['last_epoch']:.4f} | {r['peft']['final']:.4f} | {r['shovel']['final']:.4f} | {r['peft']['valid']:.4f} | {r['shovel']['valid']:.4f} |" for r in rows],
        f"| mean | {mean('peft', 'last_epoch'):.4f} | {mean('shovel', 'last_epoch'):.4f} | {mean('peft', 'final'):.4f} | {mean('shovel', 'final'):.4f} | {mean('peft', 'valid'):.4f} | {mean('shovel', 'valid'):.4f} |",
        f"| standard deviation | {sd('peft', 'last_epoch')} | {sd('shovel', 'last_epoch')} | {sd('peft', 'final')} | {sd('shovel', 'final')} | {sd('peft', 'valid')} | {sd('shovel', 'valid')} |",
    ]
    write_section("train-seeds", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
