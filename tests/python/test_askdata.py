"""Ask-Data through the real server and the real CLI with the built-in model: the HTTP API's
shape, feedback turned into a dataset `shovel data check` accepts, and the attack corpus asked of
the real model never changing the database (hashed before and after) or hanging."""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import subprocess

import pytest
import urllib.error
import urllib.request

from conftest import BIN, ROOT, import_askdata_adapter, import_models, start_server

ATTACKS = [json.loads(l)["question"] for l in (ROOT / "crates/askdata/data/attacks.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
KEYS = {"question", "sql", "chart", "columns", "rows", "answer", "model_output"}


class Client:
    """A JSON POST client on the standard library."""

    def __init__(self, base_url):
        self.base_url = base_url

    def post(self, path, json):
        req = urllib.request.Request(self.base_url + path, data=__import__("json").dumps(json).encode(), headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return Response(r.status, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read())


class Response:
    def __init__(self, status_code, body):
        self.status_code = status_code
        self.text = body.decode()

    def json(self):
        return json.loads(self.text)


def sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_ask_api_feedback_and_attacks(tmp_path):
    import_models(tmp_path, ["smollm2-135m-instruct"])
    proc, url = start_server(tmp_path)
    try:
        db = tmp_path / "askdata" / "demo.db"
        before = sha(db)
        c = Client(url)
        r = c.post("/api/askdata/ask", json={"question": "华北地区2019年3-5月的销售额,用折线图来表示", "svg": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert KEYS <= set(body), body
        assert body["answer"]
        # Bad requests name the field; a client cannot point the server at another file.
        r = c.post("/api/askdata/ask", json={"question": ""})
        assert r.status_code == 400 and r.json()["error"]["param"] == "question"
        r = c.post("/api/askdata/ask", json={"question": "q", "db": "/etc/passwd"})
        assert r.status_code == 400
        r = c.post("/api/askdata/ask", json={"question": "q", "model": "nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

        # Every attack, asked of the real model, several at once.
        def ask(q):
            r = c.post("/api/askdata/ask", json={"question": q})
            return q, r.status_code, r.json()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, ATTACKS))
        assert len(results) >= 30
        for q, status, b in results:
            assert status == 200, (q, b)
            if b["sql"] is not None:
                assert b["sql"].lstrip().upper().startswith(("SELECT", "WITH", "VALUES", "(")), (q, b["sql"])
        assert sha(db) == before, "an attack changed the database"

        # Feedback becomes a training example the dataset checker accepts.
        sql = "SELECT region, ROUND(SUM(amount),2) AS amount FROM sales GROUP BY region"
        r = c.post("/api/askdata/feedback", json={"question": "各地区销售额对比", "sql": sql, "verdict": "correct", "chart": {"type": "bar", "x": "region", "y": "amount"}})
        assert r.status_code == 200, r.text
        for i in range(10):
            r = c.post("/api/askdata/feedback", json={"question": f"{2018 + i % 3}年各渠道销售额 {i}", "sql": "x", "verdict": "wrong",
                                                       "corrected_sql": f"SELECT channel, SUM(amount) AS amount FROM sales WHERE substr(order_date,1,4)='{2018 + i % 3}' GROUP BY channel"})
            assert r.status_code == 200, r.text
        assert r.json()["examples"] == 11
        r = c.post("/api/askdata/feedback", json={"question": "q", "verdict": "correct", "sql": "DELETE FROM sales"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sql"
        dataset = tmp_path / "askdata" / "feedback.jsonl"
        env = dict(os.environ, SHOVEL_HOME=str(tmp_path), RUST_LOG="warn")
        out = subprocess.run([BIN, "data", "check", str(dataset)], env=env, capture_output=True, text=True)
        assert out.returncode == 0 and "11 good example(s)" in out.stdout, out.stdout + out.stderr
        assert sha(db) == before
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_ask_cli(tmp_path):
    import_models(tmp_path, ["smollm2-135m-instruct"])
    env = dict(os.environ, SHOVEL_HOME=str(tmp_path), RUST_LOG="warn")
    run = lambda *a: subprocess.run([BIN, "ask", *a], env=env, capture_output=True, text=True, timeout=600)
    # The base model has not been taught: it answers, possibly with an error, never a crash.
    out = run("--format", "json", "华北地区2019年3-5月的销售额,用折线图来表示")
    assert out.returncode in (0, 2), out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"sql", "chart", "columns", "rows", "answer"} <= set(last)
    assert "askdata-smollm2" in out.stderr  # says which model it fell back to
    qs = tmp_path / "qs.txt"
    qs.write_text("2019年各地区的销售额\n\nTotal sales in 2020\n", encoding="utf-8")
    out = run("--questions", str(qs))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.strip().splitlines()]
    assert [l["question"] for l in lines] == ["2019年各地区的销售额", "Total sales in 2020"]
    # More questions than the engine runs and lets wait at once (one running, none waiting): all
    # answered, in order (they were refused as overloaded before the CLI bounded how many it
    # sends at a time and waited out a refusal).
    many = [f"{y}年{r}地区的销售额" for y in (2018, 2019, 2020) for r in ("华北", "华东")]
    qs.write_text("\n".join(many) + "\n", encoding="utf-8")
    small = dict(env, SHOVEL__ENGINE__MAX_RUNNING="1", SHOVEL__ENGINE__MAX_WAITING="0")
    out = subprocess.run([BIN, "ask", "--questions", str(qs)], env=small, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert [json.loads(l)["question"] for l in out.stdout.strip().splitlines()] == many
    # CSV and bad sources.
    csv = tmp_path / "shops.csv"
    csv.write_text("city,revenue\n北京,10.5\n上海,20\n", encoding="utf-8")
    out = run("--db", str(csv), "--format", "json", "revenue per city")
    assert out.returncode in (0, 2), out.stderr
    out = run("--db", str(tmp_path / "missing.db"), "q")
    assert out.returncode == 1 and "no such database file" in out.stderr, out.stderr
    out = run("--db", "postgres://u:secret@127.0.0.1:1/db", "q")
    assert out.returncode == 1 and "cannot connect to postgres://u:***@127.0.0.1:1/db" in out.stderr and "secret" not in out.stderr, out.stderr
    out = run("--chart-out", str(tmp_path / "c.gif"), "q")
    assert out.returncode == 1 and ".svg or .png" in out.stderr, out.stderr


def test_ask_cli_on_postgres_answers_as_on_sqlite(tmp_path, askdata_adapter):
    """`shovel askdata demo-db postgres://...` then `shovel ask --db postgres://...`: the same
    catalogue makes the same prompt, so the model writes the same query and the rows match the
    demo SQLite database's. Needs the throwaway server scripts/test.sh starts."""
    server = os.environ.get("SHOVEL_TEST_PG_URL")
    if not server:
        if os.environ.get("CI"):
            pytest.fail("CI runs the PostgreSQL CLI test: SHOVEL_TEST_PG_URL is not set (scripts/test.sh starts a server)")
        pytest.skip("SHOVEL_TEST_PG_URL is not set (scripts/test.sh starts a PostgreSQL server)")
    import_models(tmp_path, ["smollm2-135m-instruct"])
    import_askdata_adapter(tmp_path, askdata_adapter)
    env = dict(os.environ, SHOVEL_HOME=str(tmp_path), RUST_LOG="warn")
    name = f"askdata_cli_{os.getpid()}"
    subprocess.run(["psql", server, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True, capture_output=True)
    subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    url = server.rsplit("/", 1)[0] + "/" + name
    out = subprocess.run([BIN, "askdata", "demo-db", url], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "wrote the demo tables" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([BIN, "askdata", "demo-db", url], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "already has a table named sales" in out.stderr, out.stderr
    question = "2019年各地区的销售额"
    ask = lambda *a: subprocess.run([BIN, "ask", "--format", "json", *a, question], env=env, capture_output=True, text=True, timeout=600)
    pg, lite = ask("--db", url), ask("--db", "demo")
    assert pg.returncode == 0 and lite.returncode == 0, pg.stderr + lite.stderr
    pg, lite = json.loads(pg.stdout.strip().splitlines()[-1]), json.loads(lite.stdout.strip().splitlines()[-1])
    assert pg["sql"] and pg["sql"] == lite["sql"] and len(pg["rows"]) == 7, pg
    assert pg["columns"] == lite["columns"]
    # Numbers to 2 decimals, as the grader compares them (SQLite sums doubles, PostgreSQL numerics).
    norm = lambda rows: sorted(json.dumps([round(v, 2) if isinstance(v, (int, float)) else v for v in r]) for r in rows)
    assert norm(pg["rows"]) == norm(lite["rows"])

