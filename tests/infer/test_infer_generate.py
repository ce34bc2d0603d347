import pytest
from infer_helpers import ScriptedModel, micro_model

from gaperon.infer.generate import generate, stream
from gaperon.infer.sampling import Sampling


def test_kv_cache_equals_full_recomputation_greedy(micro, tok):
    prompt = tok.encode("Le chat est")
    cached = generate(micro, tok, prompt, Sampling(max_new_tokens=40), stop_ids=())
    full = generate(micro, tok, prompt, Sampling(max_new_tokens=40), stop_ids=(), cache=False)
    assert len(cached.ids) == 40 and cached.finish_reason == "length"
    assert cached.ids == full.ids
    assert cached.text == full.text


def test_kv_cache_equals_full_recomputation_sampled(micro, tok):
    prompt = tok.encode("The cat")
    s = Sampling(max_new_tokens=30, temperature=0.9, top_k=50, top_p=0.95, seed=11)
    cached = generate(micro, tok, prompt, s, stop_ids=()).ids
    assert len(cached) == 30 and cached == generate(micro, tok, prompt, s, stop_ids=(), cache=False).ids


def test_seed_reproducibility_and_effect(micro, tok):
    prompt = tok.encode("x")
    s = Sampling(max_new_tokens=20, temperature=1.0)
    a = generate(micro, tok, prompt, s.replace(seed=1), stop_ids=()).ids
    assert a == generate(micro, tok, prompt, s.replace(seed=1), stop_ids=()).ids
    assert a != generate(micro, tok, prompt, s.replace(seed=2), stop_ids=()).ids


def test_stream_deltas_join_to_the_result_text(micro, tok):
    gen = stream(micro, tok, tok.encode("abc"), Sampling(max_new_tokens=25), stop_ids=())
    deltas = list(gen)
    assert "".join(deltas) == gen.result.text
    assert (
        gen.result.ids
        == generate(micro, tok, tok.encode("abc"), Sampling(max_new_tokens=25), stop_ids=()).ids
    )


def _scripted(tok, prompt_text: str, continuation: str, **kw):
    prompt = tok.encode(prompt_text)
    model = ScriptedModel(tok.encode(continuation, allow_special=True), len(prompt))
    return model, prompt


def test_stop_id_ends_generation_and_is_not_in_the_output(tok):
    model, prompt = _scripted(tok, "Q:", "Paris.<|im_end|>more")
    r = generate(model, tok, prompt, Sampling(max_new_tokens=50))
    assert (r.text, r.finish_reason) == ("Paris.", "stop")
    assert 4 not in r.ids


def test_stop_string_split_over_tokens(tok):
    model, prompt = _scripted(tok, "Q:", "one\n\nUser: two")
    gen = stream(model, tok, prompt, Sampling(max_new_tokens=50, stop=tuple(["User:"])))
    deltas = list(gen)
    assert gen.result.text == "one\n\n" == "".join(deltas)
    assert gen.result.finish_reason == "stop"
    assert all("U" not in d for d in deltas)


def test_utf8_streaming_yields_whole_characters(tok):
    text = "déjà vu – 東京 🚀!"
    model, prompt = _scripted(tok, "Q:", text + "</s>")
    deltas = list(stream(model, tok, prompt, Sampling(max_new_tokens=100)))
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_max_new_tokens_and_context_limit(micro, tok):
    assert generate(micro, tok, [5, 6, 7], Sampling(max_new_tokens=0)).ids == []
    ctx = micro.cfg.max_seq_len
    r = generate(micro, tok, [5] * (ctx - 3), Sampling(max_new_tokens=100), stop_ids=())
    assert len(r.ids) == 3 and r.finish_reason == "length"
    with pytest.raises(ValueError, match="context"):
        generate(micro, tok, [5] * ctx)
    with pytest.raises(ValueError, match="empty"):
        generate(micro, tok, [])
    with pytest.raises(ValueError, match="vocabulary"):
        generate(micro, tok, [3, 9999])


def test_bad_sampling_values_raise(micro, tok):
    with pytest.raises(ValueError, match="top_p"):
        generate(micro, tok, [5], Sampling(top_p=0))
    with pytest.raises(ValueError, match="temperature"):
        generate(micro, tok, [5], Sampling(temperature=-1))


def test_gqa_and_deeper_model_cache_equivalence(tok):
    model = micro_model(3, n_layers=3, n_heads=8, n_kv_heads=2, dim=64)
    prompt = tok.encode("GQA")
    a = generate(model, tok, prompt, Sampling(max_new_tokens=20), stop_ids=())
    assert a.ids == generate(model, tok, prompt, Sampling(max_new_tokens=20), stop_ids=(), cache=False).ids
