"""logprobs / echo on /v1/completions as vLLM answers them: lm-eval's own `local-completions` model
(with its remote tokenizer on our /tokenize) scores requests against `gaperon serve` and gets the
log-likelihoods in-process scoring gives."""

import httpx
import pytest
import torch
from infer_helpers import micro_model

from gaperon.infer.requests import prompt_logprobs
from gaperon.infer.server import background_server, build_engine, create_app

NAME = "micro-lp"


@pytest.fixture(scope="module")
def model():
    return micro_model(3, max_seq_len=512)


@pytest.fixture(scope="module")
def url(model, tok):
    app = create_app(build_engine(model, tok, max_batch=4, max_len=512), tok, model_name=NAME)
    with background_server(app) as base:
        yield base


def _reference(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """In-process: the continuation's summed log-probability and whether it is the greedy path."""
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].float(), -1)
    cont = range(len(ctx), len(whole))
    total = sum(float(logp[i - 1, whole[i]]) for i in cont)
    greedy = all(int(logp[i - 1].argmax()) == whole[i] for i in cont)
    return total, greedy


def test_echo_with_logprobs_gives_the_prompt_scores(url, model, tok):
    ids = tok.encode("Bonjour le monde")
    body = {"model": NAME, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 3, "temperature": 0}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    lp = r["choices"][0]["logprobs"]
    assert r["choices"][0]["text"] == "Bonjour le monde" and r["usage"]["completion_tokens"] == 0
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    ref = prompt_logprobs(model, ids, 3)
    assert len(lp["token_logprobs"]) == len(ids)
    for got, want in zip(lp["token_logprobs"][1:], ref[1:]):
        assert got == pytest.approx(want[0], abs=1e-5)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
    for i in range(1, len(ids)):
        best = logp[i - 1].topk(3)
        top = lp["top_logprobs"][i]
        # (keys are token texts: ids that decode alike share one key, so count them by value)
        assert max(top.values()) == pytest.approx(float(best.values[0]), abs=1e-5)
        assert top[tok.decode([ids[i]])] == pytest.approx(lp["token_logprobs"][i], abs=1e-6) or ids[i] > 260
    assert lp["text_offset"] == list(range(len(ids)))  # one byte (character) per token here


def test_generated_logprobs_are_the_model_distribution(url, model, tok):
    ids = tok.encode("abc")
    body = {"model": NAME, "prompt": ids, "max_tokens": 4, "logprobs": 2, "temperature": 0}
    choice = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == 4 and len(lp["tokens"]) == 4
    seq = list(ids)
    with torch.no_grad():
        for i in range(4):
            logp = torch.log_softmax(model(torch.tensor([seq]))[0, -1].float(), -1)
            nxt = int(logp.argmax())
            assert lp["token_logprobs"][i] == pytest.approx(float(logp[nxt]), abs=1e-4)
            assert max(lp["top_logprobs"][i].values()) == pytest.approx(float(logp.max()), abs=1e-4)
            seq.append(nxt)
    chat = httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": NAME,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "logprobs": True,
            "top_logprobs": 2,
            "temperature": 0,
        },
        timeout=60,
    ).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert content and all(len(c["top_logprobs"]) == 2 and c["logprob"] <= 0 for c in content)


def test_lm_eval_local_completions_matches_in_process_scoring(url, model, tok):
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(
        base_url=url + "/v1/completions",
        model=NAME,
        tokenizer_backend="remote",
        tokenized_requests=True,
        batch_size=2,
        max_length=512,
    )
    pairs = [
        ("Question: quelle est la capitale ?\nAnswer:", " Paris"),
        ("Question: what is two plus two?\nAnswer:", " four"),
        ("Le chat", " dort"),
        ("x", "y"),
        ("La réponse est", " évidente, non ?"),
    ]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)
    ]
    got = lm.loglikelihood(requests, disable_tqdm=True)
    for (context, cont), (value, greedy) in zip(pairs, got):
        want, want_greedy = _reference(model, tok, context, cont)
        assert value == pytest.approx(want, abs=1e-4) and value < 0
        assert greedy == want_greedy
    # A continuation the model would produce greedily is recognised as such.
    ctx = "Le chat"
    seq = tok.encode(ctx)
    with torch.no_grad():
        for _ in range(3):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    cont = tok.decode(seq[len(tok.encode(ctx)) :])
    if tok.encode(ctx + cont) == seq:  # the greedy ids round-trip through text
        [(value, greedy)] = lm.loglikelihood(
            [Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=0)], disable_tqdm=True
        )
        assert greedy


def test_n_choices_and_batched_prompts(url, tok):
    body = {"model": NAME, "prompt": ["un", "deux"], "max_tokens": 5, "n": 2, "temperature": 1.0, "seed": 7}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    again = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    assert [c["text"] for c in r["choices"]] == [c["text"] for c in again["choices"]]  # seeded
    assert r["choices"][0]["text"] != r["choices"][1]["text"]  # seed + j: the n choices differ
    assert r["usage"]["prompt_tokens"] == len(tok.encode("un")) + len(tok.encode("deux"))


def test_logit_bias_forces_a_token(url, tok):
    target = tok.encode("Z")[0]
    body = {
        "model": NAME,
        "prompt": "abc",
        "max_tokens": 4,
        "temperature": 0,
        "logit_bias": {str(target): 100},
    }
    assert httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"] == "ZZZZ"


def test_tokenize_detokenize_and_special_tokens_in_prompts(url, tok):
    r = httpx.post(url + "/tokenize", json={"prompt": "<|im_start|>hi"}).json()
    assert r["tokens"] == tok.encode("<|im_start|>hi", allow_special=True) and r["tokens"][0] == 3
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == 512
    assert httpx.post(url + "/detokenize", json={"tokens": r["tokens"]}).json()["prompt"] == "<|im_start|>hi"
    assert httpx.post(url + "/detokenize", json={"tokens": [10**6]}).status_code == 400
    info = httpx.get(url + "/tokenizer_info").json()
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>"


def test_metrics_count_requests_and_tokens(url):
    before = httpx.get(url + "/metrics").text
    body = {"model": NAME, "prompt": "abc", "max_tokens": 3, "temperature": 0}
    usage = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["usage"]
    after = httpx.get(url + "/metrics").text

    def value(text: str, name: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
        return float(lines[0].split()[-1]) if lines else 0.0

    def requests_ok(text: str) -> float:
        key = 'gaperon_requests_total{route="/v1/completions",status="200"}'
        return value(text, key)

    assert requests_ok(after) == requests_ok(before) + 1
    gen = "gaperon_generation_tokens_total"
    assert value(after, gen) == value(before, gen) + usage["completion_tokens"]
    count = "gaperon_request_latency_seconds_count"
    assert value(after, count) == value(before, count) + 1
    assert "gaperon_requests_in_flight 0" in after and "gaperon_requests_waiting 0" in after


def test_echo_returns_a_text_prompt_as_given(url):
    body = {
        "model": NAME,
        "prompt": ["<|im_start|>hi", "yo"],
        "max_tokens": 2,
        "echo": True,
        "temperature": 0,
    }
    r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    texts = [c["text"] for c in r["choices"]]
    assert texts[0].startswith("<|im_start|>hi") and texts[1].startswith("yo")
    assert r["usage"]["prompt_tokens"] == 3 + 2  # the special token text is one id
