"""Fine-tuning through the official `openai` SDK against a real `shovel serve`: upload, create,
follow events and checkpoints, use the new model; bad input; cancel; and `kill -9` of the server
mid-job, after which the job resumes from its checkpoint and makes the very adapter an
uninterrupted job with the same seed makes."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import openai
import pytest
from openai import OpenAI

from conftest import BIN, ROOT, import_models, start_server

sys.path.insert(0, str(ROOT / "bench" / "train"))
from make_data import SYSTEM  # noqa: E402

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
EMBEDDER = "all-minilm-l6-v2"
# Checkpoints every 2 steps, so a crash can land after one.
ENV = {"SHOVEL__TRAIN__CHECKPOINT_EVERY": "2"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("ft-home")
    import_models(h)
    return h


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft-data")
    good = d / "train.jsonl"
    subprocess.run([sys.executable, str(ROOT / "bench" / "train" / "make_data.py"), str(good), "16"], check=True)
    bad = d / "bad.jsonl"
    lines = good.read_text().splitlines()
    broken = json.loads(lines[2])
    broken["messages"][1]["role"] = "boss"
    lines[2] = json.dumps(broken)
    lines[5] = "{not json"
    bad.write_text("\n".join(lines) + "\n")
    return good, bad


class Server:
    def __init__(self, home):
        self.home = home
        self.proc, self.url = start_server(home, ENV)
        self.client = OpenAI(base_url=self.url + "/v1", api_key="sk-test", max_retries=0, timeout=120)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wait_for(client, job_id, states, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = client.fine_tuning.jobs.retrieve(job_id)
        if j.status in states:
            return j
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {j.status} after {timeout}s")


def messages(client, job_id):
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]


def create(client, file_id, **kw):
    return client.fine_tuning.jobs.create(
        model=SMOL, training_file=file_id, seed=7, suffix="sql",
        hyperparameters={"n_epochs": 1, "batch_size": 2}, **kw,
    )


def test_fine_tuning_end_to_end_with_a_crash_in_the_middle(home, data):
    good, bad = data
    s = Server(home)
    try:
        c = s.client
        f = c.files.create(file=good.open("rb"), purpose="fine-tune")
        # Bad input: every error names its parameter.
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model="no-such-model", training_file=f.id)
        assert e.value.body["param"] == "model"
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=EMBEDDER, training_file=f.id)
        assert e.value.body["param"] == "model" and "only base chat models" in e.value.body["message"]
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=SMOL, training_file=f.id, hyperparameters={"n_epochs": 0})
        assert e.value.body["param"] == "hyperparameters.n_epochs"
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=SMOL, training_file=f.id, extra_body={"lora": {"r": 0}})
        assert e.value.body["param"] == "lora.r"
        bf = c.files.create(file=bad.open("rb"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=SMOL, training_file=bf.id)
        msg = e.value.body["message"]
        assert e.value.body["param"] == "training_file"
        assert "line 3: messages[1].role" in msg and "line 6" in msg, msg
        with pytest.raises(openai.NotFoundError):
            c.fine_tuning.jobs.retrieve("ftjob-nope")

        # This job is killed after its checkpoint at step 2; a second identical job then runs
        # uninterrupted, and the two adapters must be the same bytes.
        job = create(c, f.id)
        assert job.status in ("queued", "running") and job.hyperparameters.n_epochs == 1
        deadline = time.time() + 300
        while not any("Checkpoint created at step 2" in m for m in messages(c, job.id)):
            assert time.time() < deadline, messages(c, job.id)
            time.sleep(0.3)
        s.kill9()
        s = Server(home)
        c = s.client
        done = wait_for(c, job.id, ("succeeded", "failed", "cancelled"))
        assert done.status == "succeeded", done.error
        ev = messages(c, job.id)
        assert any(m.startswith("Resumed from the checkpoint at step") for m in ev), ev
        assert done.fine_tuned_model == f"ft:{SMOL}:sql:{job.id}"

        again = create(c, f.id)
        again = wait_for(c, again.id, ("succeeded", "failed", "cancelled"))
        assert again.status == "succeeded", again.error
        a = (home / "models" / "ft" / job.id / "adapter_model.safetensors").read_bytes()
        b = (home / "models" / "ft" / again.id / "adapter_model.safetensors").read_bytes()
        assert a == b, "the resumed job's adapter differs from the uninterrupted one's"
        cfg = json.loads((home / "models" / "ft" / job.id / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == 16 and "q_proj" in cfg["target_modules"]

        # Metrics, checkpoints, listing.
        ev = list(c.fine_tuning.jobs.list_events(again.id, limit=100))
        steps = [e for e in ev if e.type == "metrics"]
        assert steps and all("train_loss" in e.data for e in steps)
        cps = list(c.fine_tuning.jobs.checkpoints.list(again.id))
        assert cps and cps[0].step_number == 8 and "train_loss" in cps[0].metrics.model_dump()
        assert {job.id, again.id} <= {j.id for j in c.fine_tuning.jobs.list(limit=10)}

        # The new models are served at once, over the base.
        ids = [m.id for m in c.models.list()]
        assert done.fine_tuned_model in ids and again.fine_tuned_model in ids
        r = c.chat.completions.create(
            model=done.fine_tuned_model, temperature=0, max_tokens=8,
            messages=[{"role": "user", "content": "Top 3 cities by sales in 2019"}],
        )
        assert r.choices[0].message.content

        # Cancel: stops within a step; no model appears.
        slow = c.fine_tuning.jobs.create(model=SMOL, training_file=f.id, seed=1, hyperparameters={"n_epochs": 5, "batch_size": 1})
        wait_for(c, slow.id, ("running",))
        cancelled = c.fine_tuning.jobs.cancel(slow.id)
        assert cancelled.status == "cancelled"
        time.sleep(3)
        slow = c.fine_tuning.jobs.retrieve(slow.id)
        assert slow.status == "cancelled" and slow.fine_tuned_model is None
        assert not any(slow.id in m.id for m in c.models.list())
        with pytest.raises(openai.BadRequestError):
            c.fine_tuning.jobs.cancel(slow.id)
    finally:
        s.stop()

    # Export: the adapter merged into a GGUF answers as the adapter over its base does.
    env = dict(os.environ, SHOVEL_HOME=str(home), RUST_LOG="warn")
    merged = home / "merged.gguf"
    subprocess.run([BIN, "export", done.fine_tuned_model, "--quant", "f16", "-o", str(merged)], env=env, check=True, capture_output=True)
    subprocess.run([BIN, "import", str(merged), "--name", "merged-sql"], env=env, check=True, capture_output=True)
    # The merged f16 weights and the Q4_1 base + f32 adapter round differently, so a near-tie
    # in a reply may go either way: with the adapter the pair-shared trainer makes, this prompt's
    # greedy replies part after `{"sql": "SELECT city`: ` FROM` -0.664 vs `,` -0.768 (logprobs)
    # with the adapter, `,` -0.667 vs ` FROM` -0.770 merged, a 0.1 near-tie. The check: the
    # merged model writes the adapter's opening, which the base does not.
    ask = lambda m, n: subprocess.run(  # noqa: E731
        [BIN, "run", m, "Top 3 cities by sales in 2019", "--system", SYSTEM, "--temperature", "0", "--max-tokens", str(n)],
        env=env, check=True, capture_output=True, text=True).stdout
    via_adapter = ask(done.fine_tuned_model, 6)
    assert via_adapter != ask(SMOL, 6), "the adapter changed nothing"
    assert ask("merged-sql", 6) == via_adapter


def test_tune_cli_trains_lists_and_refuses_bad_data(tmp_path, data):
    good, bad = data
    h = tmp_path / "home"
    h.mkdir()
    import_models(h, [SMOL])
    env = dict(os.environ, SHOVEL_HOME=str(h), RUST_LOG="warn")
    r = subprocess.run([BIN, "tune", "--data", str(good), "--val-ratio", "0.25", "--epochs", "1", "--batch-size", "4", "--suffix", "cli", "--json"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"].startswith(f"ft:{SMOL}:cli:ftjob-")
    assert len(summary["losses"]) == 3 and len(summary["valid_losses"]) == 1  # 12 train / 4 validation, batch 4
    assert "split" in r.stderr and "12 training / 4 validation" in r.stderr
    assert "fine-tuned model:" in r.stdout
    jobs = subprocess.run([BIN, "jobs"], env=env, capture_output=True, text=True, check=True).stdout
    assert summary["job"] in jobs and "succeeded" in jobs
    show = subprocess.run([BIN, "jobs", "show", summary["job"]], env=env, capture_output=True, text=True, check=True).stdout
    assert "The job has successfully completed" in show and "fine-tuned model:" in show
    # A file with bad lines is refused before any training, every error listed.
    r = subprocess.run([BIN, "tune", "--data", str(bad)], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "line 3: messages[1].role" in r.stderr and "line 6" in r.stderr, r.stderr
    # The second architecture trains too: Gemma 3, whose adapter then changes what it answers.
    import_models(h, [GEMMA])
    r = subprocess.run([BIN, "tune", "--model", GEMMA, "--data", str(good), "--epochs", "1", "--batch-size", "4", "--suffix", "g", "--json"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    gemma = json.loads(r.stdout.strip().splitlines()[-1])
    assert gemma["model"].startswith(f"ft:{GEMMA}:g:ftjob-") and len(gemma["losses"]) == 4
    ask = lambda m: subprocess.run(  # noqa: E731
        [BIN, "run", m, "Top 3 cities by sales in 2019", "--system", SYSTEM, "--temperature", "0", "--max-tokens", "8"],
        env=env, check=True, capture_output=True, text=True).stdout
    assert ask(gemma["model"]) != ask(GEMMA), "the Gemma adapter changed nothing"
    # A model that is not a chat model cannot be tuned: a clear refusal naming the reason.
    import_models(h, [EMBEDDER])
    r = subprocess.run([BIN, "tune", "--model", EMBEDDER, "--data", str(good)], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "only base chat models" in r.stderr, r.stderr
