"""The OpenAI-compatible server end to end, in-process on a free loopback port."""

import threading
import time

import httpx
import openai
import pytest
import torch
from infer_helpers import micro_model

from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling
from gaperon.infer.server import background_server, build_engine, create_app

NAME = "micro-test"


@pytest.fixture(scope="module")
def model():
    return micro_model(0, max_seq_len=2048)


@pytest.fixture(scope="module")
def served(model, tok):
    app = create_app(build_engine(model, tok, max_batch=4), tok, model_name=NAME)
    with background_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def _chat_ref(model, tok, content, n):
    return generate(
        model, tok, tok.encode_chat([{"role": "user", "content": content}]), Sampling(max_new_tokens=n)
    )


def test_chat_non_streaming_and_streaming(client, model, tok):
    msgs = [{"role": "user", "content": "Bonjour !"}]
    r = client.chat.completions.create(model=NAME, messages=msgs, max_tokens=12, temperature=0)
    ref = _chat_ref(model, tok, "Bonjour !", 12)
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].finish_reason == ("length" if ref.finish_reason == "length" else "stop")
    assert r.usage.prompt_tokens == len(tok.encode_chat(msgs))
    assert r.usage.completion_tokens == len(ref.ids)
    chunks = list(
        client.chat.completions.create(
            model=NAME,
            messages=msgs,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens


def test_completions_non_streaming_and_streaming(client, model, tok):
    ref = generate(model, tok, tok.encode("Once upon"), Sampling(max_new_tokens=10))
    r = client.completions.create(model=NAME, prompt="Once upon", max_tokens=10, temperature=0)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == len(ref.ids)
    chunks = list(
        client.completions.create(model=NAME, prompt="Once upon", max_tokens=10, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == ref.text
    ids = client.completions.create(model=NAME, prompt=tok.encode("Once upon"), max_tokens=10, temperature=0)
    assert ids.choices[0].text == ref.text


def test_models_and_health(served, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    h = httpx.get(served[0] + "/health").json()
    assert h["status"] == "ok" and h["model"] == NAME


def test_stop_strings_and_seeds(client, model, tok):
    ref = generate(model, tok, tok.encode("stop here"), Sampling(max_new_tokens=20), stop_ids=())
    stop = ref.text[4:6]
    r = client.completions.create(model=NAME, prompt="stop here", max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].text == ref.text[: ref.text.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    kw = dict(model=NAME, prompt="dice", max_tokens=15, temperature=1.0, top_p=0.9, seed=123)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text


def test_concurrent_requests_are_batched_and_correct(served, client, model, tok):
    """Eight clients at once (half streaming) each get exactly the reference generator's text; the
    references are long enough that an empty or truncated answer fails, and fewer engine steps than
    generated tokens prove that requests shared decode steps."""
    loop = served[1].state.engine_loop
    prompts = [f"request number {i} " * (1 + i % 3) for i in range(8)]
    refs = [generate(model, tok, tok.encode(p), Sampling(max_new_tokens=24)) for p in prompts]
    assert all(r.text for r in refs) and sum(len(r.ids) for r in refs) >= 8 * 12
    results: dict[int, str] = {}
    errors: list[Exception] = []
    steps0 = loop.steps

    def worker(i: int) -> None:
        try:
            if i % 2:
                r = client.completions.create(model=NAME, prompt=prompts[i], max_tokens=24, temperature=0)
                results[i] = r.choices[0].text
            else:
                s = client.completions.create(
                    model=NAME, prompt=prompts[i], max_tokens=24, temperature=0, stream=True
                )
                results[i] = "".join(c.choices[0].text for c in s)
        except Exception as e:  # noqa: BLE001 - collected and asserted empty below, with the errors shown
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert [results.get(i) for i in range(8)] == [r.text for r in refs]
    assert loop.steps - steps0 < sum(len(r.ids) + 1 for r in refs)  # serial decoding needs at least that
    assert loop.num_active == 0


BAD = [
    ("/v1/chat/completions", "{not json", 400, None),
    ("/v1/chat/completions", "[1, 2]", 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    (
        "/v1/chat/completions",
        {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
        404,
        "model",
    ),
    ("/v1/chat/completions", {"model": NAME}, 400, "messages"),
    ("/v1/chat/completions", {"model": NAME, "messages": []}, 400, "messages"),
    (
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages",
    ),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": 3}]}, 400, "messages"),
    ("/v1/completions", {"model": NAME}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": 12}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": [1, 99999]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "temperature": -0.5}, 400, "temperature"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "n": 0}, 400, "n"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "n": 99}, 400, "n"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "logit_bias": {"7": 500}}, 400, "logit_bias"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "presence_penalty": 3}, 400, "presence_penalty"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    (
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1},
        400,
        "max_completion_tokens",
    ),
    ("/v1/completions", {"model": NAME, "prompt": "x", "stop": 5}, 400, "stop"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "seed": "abc"}, 400, "seed"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"model": NAME, "prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("/v1/completions", {"model": NAME, "prompt": "x" * 2100}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "x" * 2000, "max_tokens": 100}, 400, "max_tokens"),
    (
        "/v1/chat/completions",
        {"model": NAME, "messages": [{"role": "user", "content": "x" * 2100}]},
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD)
def test_bad_requests_get_openai_errors(served, path, body, status, param):
    url = served[0]
    if isinstance(body, str):
        r = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(url + path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param
    assert httpx.get(url + "/health").status_code == 200  # still alive


def test_context_errors_say_why(served):
    r = httpx.post(served[0] + "/v1/completions", json={"model": NAME, "prompt": "x" * 2100})
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "2048" in r.json()["error"]["message"]


def test_unknown_route_and_method(served):
    r = httpx.get(served[0] + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(served[0] + "/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_openai_client_sees_errors(client):
    with pytest.raises(openai.BadRequestError, match="'n' must be <= 16"):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], n=17)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_disconnect_mid_stream_frees_the_slot(served):
    url, app = served
    loop = app.state.engine_loop
    cancelled0 = loop.cancelled
    body = {"model": NAME, "prompt": "go on forever", "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=30) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
        assert loop.num_active == 1
    deadline = time.monotonic() + 10
    while loop.num_active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert loop.num_active == 0
    assert loop.engine.num_active == 0
    assert loop.cancelled == cancelled0 + 1  # stopped early, not run to its 2000 tokens


def test_api_key(model, tok):
    app = create_app(build_engine(model, tok, max_batch=2), tok, model_name=NAME, api_key="sesame")
    with background_server(app) as url:
        good = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        assert good.completions.create(model=NAME, prompt="hi", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model=NAME, prompt="hi", max_tokens=2)
        r = httpx.get(url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/health").status_code == 200


def test_server_with_a_draft_model_equals_plain_greedy(model, tok):
    draft = micro_model(1, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=2048)
    app = create_app(build_engine(model, tok, draft=draft, draft_k=3), tok, model_name=NAME)
    ref = _chat_ref(model, tok, "draft me", 10)
    with background_server(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "draft me"}], max_tokens=10, temperature=0
        )
        assert r.choices[0].message.content == ref.text


class _SlowHead(torch.nn.Linear):
    def forward(self, x):
        time.sleep(0.002)
        return super().forward(x)


def test_queued_requests_wait_a_leaving_client_is_dropped_and_overload_gets_503(model, tok):
    """One slot, room for two requests in flight: the second waits for the slot (no error); if its
    client leaves while it waits it is dropped from the queue; a third gets 503, never a hang."""
    chatty = micro_model(0, max_seq_len=2048)  # never emits a stop token, >= 2 ms a token: the long
    head = _SlowHead(chatty.cfg.dim, chatty.cfg.vocab_size, bias=True)  # request outlives the test
    with torch.no_grad():
        head.weight.copy_(chatty.lm_head.weight)
        head.bias.zero_()
        head.bias[sorted(tok.stop_ids)] = -1e4
    chatty.lm_head = head
    app = create_app(build_engine(chatty, tok, max_batch=1), tok, model_name=NAME, max_pending=2)
    long = {"model": NAME, "prompt": "go on forever", "max_tokens": 2000, "temperature": 0, "stream": True}
    short = {"model": NAME, "prompt": "hi", "max_tokens": 3, "temperature": 0}
    with background_server(app) as url, httpx.Client(timeout=30) as c:
        loop = app.state.engine_loop
        with c.stream("POST", url + "/v1/completions", json=long) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # it holds the only slot now
            cancelled0 = loop.cancelled
            with pytest.raises(httpx.ReadTimeout):  # queued behind the long one; the client gives up
                httpx.post(url + "/v1/completions", json=short, timeout=0.5)
            deadline = time.monotonic() + 10
            while loop.cancelled == cancelled0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert loop.cancelled == cancelled0 + 1 and loop.num_active == 1
            with c.stream("POST", url + "/v1/completions", json=long) as waiting:
                assert waiting.status_code == 200  # queued, not refused
                busy = httpx.post(url + "/v1/completions", json=short, timeout=10)
                assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_overloaded"
        deadline = time.monotonic() + 10
        while loop.num_active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loop.num_active == 0 and loop.engine.num_active == 0
        assert c.post(url + "/v1/completions", json=short).status_code == 200


def test_oversized_bodies_are_refused(served):
    r = httpx.post(
        served[0] + "/v1/completions",
        content=b"{" + b" " * (17 << 20) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(served[0] + "/health").status_code == 200
