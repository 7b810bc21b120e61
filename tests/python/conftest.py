"""Starts a real `shovel serve` for the SDK tests, in its own SHOVEL_HOME, with the built-in
models imported in place from the cache that `scripts/test.sh` fills with `shovel pull`."""

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("SHOVEL_BIN", str(ROOT / "target" / "debug" / "shovel"))
CACHE = pathlib.Path(os.environ.get("SHOVEL_HOME", pathlib.Path.home() / ".shovel"))
MODELS = ["smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_models(home, models=MODELS):
    """Registers the cached built-in models in `home`, in place."""
    env = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn")
    for m in models:
        # A GGUF file, or a model directory (the embedding model).
        path = CACHE / "models" / m / "model.gguf"
        if not path.exists():
            path = CACHE / "models" / m / "model"
        assert path.exists(), f"{path} is missing: run `shovel pull {m}` first (scripts/test.sh does)"
        subprocess.run([BIN, "import", str(path), "--name", m], env=env, check=True, capture_output=True)


def start_server(home, extra_env=None, port=None):
    """Starts `shovel serve` on `home`; returns (process, base url) once /health answers."""
    env = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn", **(extra_env or {}))
    port = port or free_port()
    log = open(home / "server.log", "a")
    proc = subprocess.Popen([BIN, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("server did not start:\n" + (home / "server.log").read_text())
            time.sleep(0.1)


@pytest.fixture(scope="session")
def base_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("shovel-home")
    import_models(home)
    proc, url = start_server(home)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, "server did not shut down cleanly:\n" + (home / "server.log").read_text()


@pytest.fixture(scope="session")
def askdata_adapter(tmp_path_factory):
    """An Ask-Data adapter taught in this session, as a user would: the first 100 shipped teaching
    examples (`shovel askdata teach-data`), 2 epochs, `shovel tune` (about 2.5 minutes here). The
    untaught base model declines every demo question, so tests that need answers with rows, a
    chart and SQL import this as `askdata-smollm2` (see `import_askdata_adapter`)."""
    home = tmp_path_factory.mktemp("askdata-teach")
    import_models(home, ["smollm2-135m-instruct"])
    env = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn")
    subprocess.run([BIN, "askdata", "teach-data", str(home / "teach.jsonl")], env=env, check=True, capture_output=True)
    lines = (home / "teach.jsonl").read_text(encoding="utf-8").splitlines()[:100]
    (home / "teach100.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cmd = [BIN, "tune", "--model", "smollm2-135m-instruct", "--data", str(home / "teach100.jsonl"), "--epochs", "2", "--seed", "42", "--suffix", "askdata", "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout.strip().splitlines()[-1])["job"]
    return home / "models" / "ft" / job


def import_askdata_adapter(home, adapter):
    """Registers the session's adapter in `home` as `askdata-smollm2`, the id Ask-Data uses by default."""
    env = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn")
    subprocess.run([BIN, "import", str(adapter), "--name", "askdata-smollm2", "--base", "smollm2-135m-instruct"], env=env, check=True, capture_output=True)

