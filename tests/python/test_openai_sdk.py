"""The official `openai` Python SDK against a real `shovel serve`: the compatibility contract."""

import json
from typing import Literal

import openai
import pydantic
import pytest
from openai import OpenAI

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="sk-test", max_retries=0, timeout=120)


def test_lists_models(client):
    ids = [m.id for m in client.models.list()]
    assert SMOL in ids and GEMMA in ids
    assert client.models.retrieve(SMOL).id == SMOL


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_chat_without_streaming(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=24,
        temperature=0,
    )
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content.strip(), "empty answer"
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_deltas_and_final_usage(client):
    stream = client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens > 0


def test_streamed_text_equals_unstreamed_text(client):
    kw = dict(model=SMOL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=20, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    parts = client.chat.completions.create(stream=True, **kw)
    assert "".join(ch.choices[0].delta.content or "" for ch in parts if ch.choices) == whole


def test_completion_matches_reference_continuation(client):
    r = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=3, temperature=0)
    assert r.choices[0].text == " Paris.\n"
    assert r.usage.completion_tokens == 3


def test_n_choices_and_seeded_sampling(client):
    kw = dict(model=SMOL, messages=[{"role": "user", "content": "Tell me a word."}], max_tokens=8, temperature=1.0, seed=42)
    a = client.chat.completions.create(n=2, **kw)
    assert len(a.choices) == 2 and [c.index for c in a.choices] == [0, 1]
    b = client.chat.completions.create(n=2, **kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_logprobs(client):
    r = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    lp = r.choices[0].logprobs.content
    assert len(lp) >= 1
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)
    # Greedy: the chosen token is the most likely one.
    assert lp[0].token == lp[0].top_logprobs[0].token


def test_stop_string(client):
    r = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=8, temperature=0, stop=["."])
    assert r.choices[0].text == " Paris"
    assert r.choices[0].finish_reason == "stop"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert e.value.body["code"] == "model_not_found"


def test_bad_requests_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SMOL, messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    assert "8192" in e.value.body["message"] and "100000" in e.value.body["message"]
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integr"}}}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], response_format=bad_schema)
    assert e.value.body["param"] == "response_format" and "integr" in e.value.body["message"]


class Capital(pydantic.BaseModel):
    country: str = pydantic.Field(max_length=30)
    capital: str = pydantic.Field(max_length=30)
    continent: Literal["Africa", "Asia", "Europe", "North America", "Oceania", "South America"]


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_structured_output_parses_into_the_callers_type(client, model):
    # The SDK sends a strict json_schema built from the pydantic model and parses the reply.
    r = client.beta.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        response_format=Capital,
        max_tokens=60,
        temperature=0,
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    assert isinstance(c.message.parsed, Capital)
    assert c.message.parsed.capital == "Paris"


def test_json_object_mode_and_a_cut_schema(client):
    r = client.chat.completions.create(
        model=SMOL,
        # A question with a short, certain answer: an open-ended one ("an object with one key,
        # name") let the 135M model ramble past max_tokens, depending on near-ties.
        messages=[{"role": "user", "content": 'What is the capital of France? Answer as a JSON object with the key "answer".'}],
        response_format={"type": "json_object"},
        max_tokens=100,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop"
    assert "answer" in json.loads(r.choices[0].message.content)
    # A schema that cannot be finished in max_tokens ends with `length`, never as complete JSON.
    long = {"type": "json_schema", "json_schema": {"name": "many", "strict": True, "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 50}}}
    r = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Numbers."}], response_format=long, max_tokens=20, temperature=0)
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


@pytest.mark.parametrize(
    "model,question,expect",
    [
        (SMOL, "Explain what a database index is in one sentence.", "index"),
        (GEMMA, "What is the capital of France?", "Paris"),
    ],
)
def test_both_architectures_answer_coherently(client, model, question, expect):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0)
    assert expect in r.choices[0].message.content


def test_files_round_trip(client):
    data = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    f = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert f.object == "file" and f.bytes == len(data) and f.purpose == "fine-tune" and f.filename == "train.jsonl"
    assert f.id in [x.id for x in client.files.list(purpose="fine-tune")]
    assert client.files.retrieve(f.id).bytes == len(data)
    assert client.files.content(f.id).read() == data
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_shared_system_prompt_is_served_from_the_prefix_cache(client):
    system = "You are a careful data analyst. " * 20
    ask = lambda q: client.chat.completions.create(
        model=SMOL, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}], max_tokens=4, temperature=0
    )
    ask("Which region sold most?")
    r = ask("Which month sold least?")
    assert r.usage.prompt_tokens_details.cached_tokens >= 100


def test_metrics_show_the_engine_and_no_leaked_kv(client, base_url):
    import re
    import time
    import urllib.request

    client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    stream = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Tell a long story."}], max_tokens=200, stream=True)
    next(iter(stream))
    stream.close()  # hang up mid-generation
    deadline = time.time() + 10
    while True:
        text = urllib.request.urlopen(base_url + "/metrics").read().decode()
        running = re.search(r'shovel_running_sequences\{model="smollm2-135m-instruct"\} (\S+)', text)
        kv = re.search(r'shovel_kv_cache_bytes\{model="smollm2-135m-instruct"\} (\S+)', text)
        assert running and kv, text
        if float(running.group(1)) == 0 and float(kv.group(1)) == 0:
            break
        assert time.time() < deadline, "sequences or KV not released:\n" + text
        time.sleep(0.1)
    assert "# TYPE shovel_requests_total counter" in text


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_tool_calls_follow_the_tools_schema(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=60, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    # The result goes back in; the model answers (in text, or with another call: both are valid).
    messages += [c.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    r = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], max_tokens=40, temperature=0)
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if c.finish_reason == "tool_calls":
        assert json.loads(c.message.tool_calls[0].function.arguments)["unit"] in ("celsius", "fahrenheit")
    else:
        assert c.message.content


def test_parallel_tool_calls_are_each_held_to_the_schema(client):
    messages = [{"role": "user", "content": "What is the weather in Paris and in Tokyo?"}]
    r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER], tool_choice="required", parallel_tool_calls=True, max_tokens=200, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    assert 1 <= len(c.message.tool_calls) <= 8
    for call in c.message.tool_calls:
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments)["unit"] in ("celsius", "fahrenheit")
    assert len({call.id for call in c.message.tool_calls}) == len(c.message.tool_calls)
    # One call by default.
    r = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=200, temperature=0)
    assert r.choices[0].finish_reason == "tool_calls" and len(r.choices[0].message.tool_calls) == 1


def test_tool_calls_stream_as_one_delta(client):
    stream = client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["unit"] in ("celsius", "fahrenheit")
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["tool_calls"]
