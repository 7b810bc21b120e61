"""/v1/embeddings through the official SDK on the built-in all-MiniLM-L6-v2: the vectors equal the
PyTorch reference (tests/reference), whichever encoding the SDK asks for, and they rank by
meaning."""

import base64
import json
import math
import pathlib
import struct

import openai
import pytest
from openai import OpenAI

MINILM = "all-minilm-l6-v2"
REF = pathlib.Path(__file__).resolve().parents[1] / "reference" / "all-minilm-l6-v2.embeddings.jsonl"


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="sk-test", max_retries=0, timeout=120)


def reference():
    return [json.loads(line) for line in REF.read_text().splitlines() if line.strip()]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_listed_as_a_model(client):
    assert MINILM in [m.id for m in client.models.list()]


def test_vectors_match_the_pytorch_reference(client):
    refs = reference()
    # The SDK asks for base64 by default and decodes it.
    resp = client.embeddings.create(model=MINILM, input=[r["text"] for r in refs])
    assert resp.model == MINILM and resp.object == "list"
    assert [d.index for d in resp.data] == list(range(len(refs)))
    for r, d in zip(refs, resp.data):
        assert len(d.embedding) == 384
        worst = max(abs(a - b) for a, b in zip(d.embedding, r["embedding"]))
        assert worst < 1e-4, (r["text"], worst)
    assert resp.usage.prompt_tokens == sum(len(r["ids"]) for r in refs)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens


def test_float_and_base64_agree_and_token_ids_equal_text(client):
    text = "Quarterly revenue grew by 12 percent in North China."
    floats = client.embeddings.create(model=MINILM, input=text, encoding_format="float").data[0].embedding
    raw = client.with_raw_response.embeddings.create(model=MINILM, input=text, encoding_format="base64").http_response.json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(floats, abs=1e-7)
    ids = next(r["ids"] for r in reference() if r["text"] == text)
    by_ids = client.embeddings.create(model=MINILM, input=[ids[1:-1]], encoding_format="float").data[0].embedding
    assert by_ids == pytest.approx(floats, abs=1e-6)


def test_similar_sentences_rank_first(client):
    texts = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly revenue grew by 12 percent in North China."]
    v = [d.embedding for d in client.embeddings.create(model=MINILM, input=texts).data]
    assert cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.3
    assert math.isclose(sum(x * x for x in v[0]), 1.0, rel_tol=1e-5)


def test_bad_embedding_requests(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="smollm2-135m-instruct", input="hi")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MINILM, input="hi", dimensions=128)
    assert e.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MINILM, input=[[1, 2, 999999]])
    assert e.value.body["param"] == "input" and "999999" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MINILM, input="word " * 600)
    assert e.value.body["param"] == "input" and "512" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MINILM, messages=[{"role": "user", "content": "hi"}])
