"""HTTP serving benchmark, side by side: `shovel serve` against llama.cpp's `llama-server
--parallel 8` on the same GGUF with the same threads, each started fresh per round, alternating.

Per server and round:
  start    process start to the first streamed token of one chat request (sent in a retry loop
           from the moment the process is spawned: no separate health wait)
  waves    8 concurrent streaming chats (different prompts, max_tokens 128, temperature 0), twice
           with different questions; the second is measured: aggregate output tokens/s over the wave's wall time, and each
           request's time to first token (p50 over the 8)
  rss      peak resident memory of the server process after the waves (VmHWM)
llama-server runs twice per round: with `-c 8192` (1024 tokens per slot, room for this
workload: the measured anchor for every row), and at its default context (the model's 8192
tokens per slot in the version measured, what each Shovel sequence may use; read from its
`/props`), last in each round: an RSS row of its own, since
llama-server reserves its whole KV cache up front while Shovel allocates blocks as it goes.
Medians over rounds; writes the `http` section of docs/BENCHMARKS.md. Standard library only:
run with any Python 3 (scripts/bench.sh runs it after the engine benchmark). Not a test."""

import argparse
import datetime
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from sections import cpu_name, write_section  # noqa: E402

SHOVEL = ROOT / "target" / "release" / "shovel"
MODEL = "smollm2-135m-instruct"
TOPICS = ["the sea", "a lighthouse keeper", "a city at night", "the first snow", "a long train journey",
          "an old library", "a mountain village", "a robot learning to paint"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_chat(port, content, max_tokens, deadline=None):
    """Sends one streaming chat; returns (seconds to first content token, content chunks, the
    perf_counter time of the first token).
    With a deadline, retries refused connections until then (a server still starting)."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True})
    while True:
        t0 = time.perf_counter()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status == 503 and deadline and time.time() < deadline:
                # llama-server answers 503 while loading the model.
                r.read()
                c.close()
                time.sleep(0.005)
                continue
            break
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            if not deadline or time.time() > deadline:
                raise
            time.sleep(0.005)
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]}")
    first, chunks = None, 0
    for line in r:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        for ch in ev.get("choices", []):
            if ch.get("delta", {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    c.close()
    return (first - t0) if first else None, chunks, first


def wave(port, max_tokens, ask):
    out = [None] * len(TOPICS)

    def one(i):
        out[i] = stream_chat(port, ask.format(TOPICS[i]), max_tokens)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(TOPICS))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(o[1] for o in out)
    return {"tok_s": tokens / wall, "ttft_p50_ms": 1000 * statistics.median(o[0] for o in out), "tokens": tokens}


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(cmd, env, port, max_tokens, props=False):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, _, first = stream_chat(port, "Say hello.", 8, deadline=time.time() + 120)
        start_ms = 1000 * (first - t0) if first else float("nan")
        # The warm-up wave asks other questions, so the measured prompts are not cached whole.
        wave(port, max_tokens, "Write a short poem about {}.")
        w = wave(port, max_tokens, "Write a long story about {}.")
        w["start_ms"] = start_ms
        w["rss_mib"] = peak_rss_mib(proc.pid)
        if props:
            # llama-server's context per slot, as it reports it (defaults differ between versions).
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/props")
            w["n_ctx_slot"] = json.loads(c.getresponse().read())["default_generation_settings"]["n_ctx"]
            c.close()
        return w
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", required=True, help="directory with llama-server")
    ap.add_argument("--lib", default="", help="LD_LIBRARY_PATH for llama-server")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    cache = pathlib.Path(os.environ.get("SHOVEL_HOME", pathlib.Path.home() / ".shovel"))
    gguf = cache / "models" / MODEL / "model.gguf"
    home = pathlib.Path(tempfile.mkdtemp(prefix="shovel-http-bench-"))
    senv = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn", SHOVEL__ENGINE__THREADS=str(a.threads))
    subprocess.run([str(SHOVEL), "import", str(gguf), "--name", MODEL], env=senv, check=True, capture_output=True)
    lenv = dict(os.environ, LD_LIBRARY_PATH=a.lib) if a.lib else dict(os.environ)
    rows = {"llama.cpp": [], "shovel": [], "llama.cpp default -c": []}
    # One untimed start of Shovel on its fresh home: the first start writes the Ask-Data demo
    # database (~1 s, once per home), which every later start skips.
    port = free_port()
    proc = subprocess.Popen([str(SHOVEL), "serve", "--host", "127.0.0.1", "--port", str(port)], env=senv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stream_chat(port, "Say hello.", 1, deadline=time.time() + 120)
    proc.terminate()
    proc.wait()
    for r in range(a.rounds):
        port = free_port()
        rows["llama.cpp"].append(measure([str(pathlib.Path(a.llama_bin) / "llama-server"), "-m", str(gguf), "-t", str(a.threads), "--parallel", "8",
                                          "-c", str(8 * 1024), "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL], lenv, port, a.max_tokens))
        port = free_port()
        rows["shovel"].append(measure([str(SHOVEL), "serve", "--host", "127.0.0.1", "--port", str(port)], senv, port, a.max_tokens))
        port = free_port()
        rows["llama.cpp default -c"].append(measure([str(pathlib.Path(a.llama_bin) / "llama-server"), "-m", str(gguf), "-t", str(a.threads), "--parallel", "8",
                                                     "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL], lenv, port, a.max_tokens, props=True))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]}" for k, v in rows.items()), flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("tok_s", "ttft_p50_ms", "rss_mib", "start_ms")} for k, v in rows.items()}
    t, o, d = med["llama.cpp"], med["shovel"], med["llama.cpp default -c"]
    slot = rows["llama.cpp default -c"][0]["n_ctx_slot"]
    lines = [
        "## Serving over HTTP",
        "",
        "Written by `bench/http/run.py` (`scripts/bench.sh` runs it after the engine measures). `shovel serve`",
        f"against `llama-server --parallel 8` on the same GGUF ({MODEL}, Q4_1) with {a.threads} threads, each",
        "started fresh per round, alternating; 8 concurrent streaming chats (different prompts,",
        f"max_tokens {a.max_tokens}, temperature 0), the second of two waves (other questions) measured; medians of {a.rounds} rounds.",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {cpu_name()}, {os.cpu_count()} vCPU, {a.threads} threads",
        "",
        "| measure | llama.cpp | Shovel | ratio | goal |",
        "|---|---:|---:|---:|---|",
        f"| 8 concurrent streaming chats: aggregate output tokens/s | {t['tok_s']:.1f} | {o['tok_s']:.1f} | {o['tok_s'] / t['tok_s']:.2f}x | >= 3x |",
        f"| 8 concurrent streaming chats: time to first token, p50 | {t['ttft_p50_ms']:.0f} ms | {o['ttft_p50_ms']:.0f} ms | {o['ttft_p50_ms'] / t['ttft_p50_ms']:.2f}x | <= 0.25x |",
        f"| peak RSS while serving (VmHWM after the waves) | {t['rss_mib']:.0f} MiB | {o['rss_mib']:.0f} MiB | {o['rss_mib'] / t['rss_mib']:.2f}x | <= 0.5x |",
        f"| peak RSS, llama-server at its default context ({slot} tokens per slot) | {d['rss_mib']:.0f} MiB | {o['rss_mib']:.0f} MiB | {o['rss_mib'] / d['rss_mib']:.2f}x | (the goal's anchor is the row above) |",
        f"| process start to first streamed token | {t['start_ms']:.0f} ms | {o['start_ms']:.0f} ms | {o['start_ms'] / t['start_ms']:.2f}x | <= 1 s |",
        "",
        "Output tokens are counted as streamed content chunks (one token each on both servers); a",
        "reply that ends before max_tokens counts what it sent. Start is timed on a home that has",
        "been served once: the very first start also writes the Ask-Data demo database (~1 s).",
        "",
        "The two RSS rows differ in llama-server's context only. With `-c 8192` its 8 slots get 1024",
        "tokens each, room for this workload's sequences (~30-token prompts and 128 new tokens), and",
        f"it reserves 180 MiB of keys and values; at its default ({slot} tokens per slot, as its",
        "`/props` reports) it reserves that for every slot up front. The goal is measured against",
        "the first row: the second says how much of llama-server's figure is reservation. A Shovel",
        "sequence may grow to the model's 8192 tokens; its cache is allocated in 16-token blocks as",
        "sequences grow (up to `engine.kv_cache_bytes`, 1 GiB by default, then LRU eviction of the",
        "prefix cache and preemption), so its RSS is what this workload used.",
        f"Other measures of the default-context run: {d['tok_s']:.1f} tokens/s, time to first token p50 {d['ttft_p50_ms']:.0f} ms.",
        "",
        "Raw rounds:",
        "",
        "```",
        *[f"{k:20s} {v}" for k, vs in rows.items() for v in vs],
        "```",
    ]
    write_section("http", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
