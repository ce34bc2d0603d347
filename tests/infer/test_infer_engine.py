import pytest
import torch
from infer_helpers import ScriptedModel

from gaperon.infer.engine import Engine, _DecodeGraphs, bucket_for, buckets, collect
from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling

TEXTS = ["Hi", "Hello world, how are you today?", "x" * 90, "Bonjour à tous", "a"]


def test_buckets():
    assert buckets(256, 64) == [64, 128, 256]
    assert buckets(300, 64) == [64, 128, 256, 300]
    assert buckets(8, 1) == [1, 2, 4, 8]
    assert bucket_for(65, [64, 128, 256]) == 128


@pytest.mark.parametrize(("max_batch", "prefill_tokens"), [(2, 16384), (8, 16384), (8, 100)])
def test_engine_equals_simple_generator_greedy(micro, tok, max_batch, prefill_tokens):
    prompts = [tok.encode(t) for t in TEXTS]
    ref = [generate(micro, tok, p, Sampling(max_new_tokens=24), stop_ids=()) for p in prompts]
    engine = Engine(micro, tok, max_batch=max_batch, prefill_tokens=prefill_tokens)
    out = engine.generate(prompts, Sampling(max_new_tokens=24), stop_ids=())
    assert [r.ids for r in out] == [r.ids for r in ref]
    assert [r.text for r in out] == [r.text for r in ref]
    assert engine.num_active == 0


def test_engine_sampling_matches_simple_generator_and_ignores_batch_mates(micro, tok):
    s = Sampling(max_new_tokens=20, temperature=1.0, top_p=0.9)
    prompt = tok.encode("seeded")
    ref = generate(micro, tok, prompt, s.replace(seed=5), stop_ids=()).ids
    engine = Engine(micro, tok, max_batch=4)
    alone = engine.generate([prompt], s.replace(seed=5), stop_ids=())[0].ids
    engine.add_request(tok.encode("a mate"), s.replace(seed=1), stop_ids=())
    rid = engine.add_request(prompt, s.replace(seed=5), stop_ids=())
    engine.add_request(tok.encode("another, longer batch mate"), s, stop_ids=())
    got = []
    while engine.has_work():
        for o in engine.step():
            if o.request_id == rid:
                got += o.token_ids
    assert ref == alone == got


def test_continuous_batching_join_and_cancel(micro, tok):
    p1, p2, p3 = tok.encode("first"), tok.encode("second prompt"), tok.encode("third")
    ref2 = generate(micro, tok, p2, Sampling(max_new_tokens=15), stop_ids=()).ids
    ref3 = generate(micro, tok, p3, Sampling(max_new_tokens=5), stop_ids=()).ids
    engine = Engine(micro, tok, max_batch=2)
    got: dict = {}
    finished: dict = {}

    def step():
        outs = engine.step()
        for o in outs:
            got.setdefault(o.request_id, []).extend(o.token_ids)
            if o.finished:
                finished[o.request_id] = o.finish_reason
        return {o.request_id for o in outs}

    a = engine.add_request(p1, Sampling(max_new_tokens=100), stop_ids=())
    for _ in range(5):
        step()
    b = engine.add_request(p2, Sampling(max_new_tokens=15), stop_ids=())
    assert step() == {a, b}  # b's prefill runs in this step and yields its first token, a decodes
    assert engine.num_running == 2
    c = engine.add_request(p3, Sampling(max_new_tokens=5), stop_ids=())
    step()
    assert engine.num_running == 2 and engine.num_active == 3  # c waits for a free slot
    assert engine.cancel(a)
    assert engine.num_active == 2
    assert c in step()  # c takes a's slot at once
    while engine.has_work():
        step()
    assert engine.num_active == 0
    assert not engine.cancel(a)
    assert got[b] == ref2 and got[c] == ref3
    assert finished == {b: "length", c: "length"}
    assert len(got[a]) == 7


def test_stop_rules_in_the_engine(tok):
    prompt = tok.encode("Q:")
    model = ScriptedModel(tok.encode("Paris. END more<|im_end|>", allow_special=True), len(prompt))
    engine = Engine(model, tok, max_batch=3)
    a = engine.generate([prompt] * 3, Sampling(max_new_tokens=50, stop=tuple(["END"])))
    assert [(r.text, r.finish_reason) for r in a] == [("Paris. ", "stop")] * 3
    b = engine.generate([prompt], Sampling(max_new_tokens=50))[0]
    assert (b.text, b.finish_reason) == ("Paris. END more", "stop")
    c = engine.generate([prompt], Sampling(max_new_tokens=3))[0]
    assert (c.text, c.finish_reason) == ("Par", "length")


def test_engine_rejects_overlong_prompts_and_clips_budget(micro, tok):
    engine = Engine(micro, tok, max_batch=2, max_len=64)
    with pytest.raises(ValueError, match="context"):
        engine.add_request([5] * 64)
    r = engine.generate([[5] * 60], Sampling(max_new_tokens=50), stop_ids=())[0]
    assert len(r.ids) == 4 and r.finish_reason == "length"
    with pytest.raises(ValueError, match="temperature"):
        engine.add_request([5], Sampling(temperature=-1))
    with pytest.raises(ValueError, match="vocabulary"):
        engine.add_request([5, 512])
    assert engine.num_active == 0


def test_static_decode_step_matches_dynamic_logits(micro, tok):
    """The function a CUDA graph captures (fixed batch and KV buckets) computes the right logits."""
    engine = Engine(micro, tok, max_batch=4)
    prompt = tok.encode("static shapes")
    engine.add_request(prompt, Sampling(max_new_tokens=2), stop_ids=())
    engine.step()  # prefill into slot 0
    req = engine._running[0]
    tokens = torch.tensor([[req.last], [0], [0], [0]])
    positions = torch.tensor([[req.next_position], [0], [0], [0]])
    with torch.inference_mode():
        static = engine.decode_logits(tokens, positions, kv_len=128)[0]
        full = micro(torch.tensor([prompt + [req.last]]))[0, -1]
    assert torch.allclose(static.float(), full.float(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA-graph decode)")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_engine_equals_simple_generator(tok, compile):
    from infer_helpers import micro_model

    model = micro_model(0).cuda()
    prompts = [tok.encode(t) for t in TEXTS]
    ref = [generate(model, tok, p, Sampling(max_new_tokens=40), stop_ids=()).ids for p in prompts]
    engine = Engine(model, tok, max_batch=4, cuda_graphs=True, compile=compile)
    out = engine.generate(prompts, Sampling(max_new_tokens=40), stop_ids=())
    assert engine._graphs is not None and engine._graphs.graphs  # really replayed graphs
    assert engine._compiled == compile  # no silent fallback
    assert [r.ids for r in out] == ref
    # Sampling on the GPU: per-request CUDA generators, same seed -> same tokens, batch mates or not.
    kw = dict(max_new_tokens=16, stop_ids=(), temperature=1.0, top_k=50, seed=7)
    alone = engine.generate([prompts[1]], **kw)[0].ids
    assert engine.generate([prompts[0], prompts[1], prompts[2]], **kw)[1].ids == alone


def _reference(micro, tok, prompts, n):
    return [generate(micro, tok, p, Sampling(max_new_tokens=n), stop_ids=()).ids for p in prompts]


def test_decode_plan_stages_static_inputs_with_holes(micro, tok):
    """A hole in the slots (a cancelled request) keeps the batch bucket; its row decodes a dummy."""
    prompts = [tok.encode(t) for t in ("one", "two, longer", "three")]
    ref = _reference(micro, tok, prompts, 12)
    engine = Engine(micro, tok, max_batch=8)
    ids = [engine.add_request(p, Sampling(max_new_tokens=12), stop_ids=()) for p in prompts]
    got = {i: [] for i in ids}
    for o in engine.step():  # prefill: slots 0, 1, 2
        got[o.request_id] += o.token_ids
    assert engine.cancel(ids[1])
    reqs, b, kv_len = engine.plan_decode()
    assert [r.slot for r in reqs] == [0, 2] and b == 4 and kv_len == 64
    tokens, positions = engine.step_inputs(b)
    assert tokens[:, 0].tolist() == [reqs[0].last, 0, reqs[1].last, 0]
    assert positions[:, 0].tolist() == [reqs[0].next_position, 0, reqs[1].next_position, 0]
    while engine.has_work():
        for o in engine.step():
            got[o.request_id] += o.token_ids
    assert got[ids[0]] == ref[0] and got[ids[2]] == ref[2]


class _ReplayGraphs:
    """Stands in for CUDA graphs on CPU with their one constraint: a replay sees nothing but the
    static buffers and the KV bucket it was captured with, and writes one fixed output tensor."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.fn, self.graphs = engine, engine.decode_logits, {}

    run = _DecodeGraphs.run

    def _capture(self, b: int, kv_len: int):
        tokens, positions = self.engine.step_inputs(b)
        out = torch.full((b, self.engine.model.cfg.vocab_size), float("nan"))
        fn = self.fn

        class Graph:
            def replay(self) -> None:
                out.copy_(fn(tokens, positions, kv_len))

        return Graph(), out


def test_graph_path_reads_only_static_buffers(micro, tok):
    prompts = [tok.encode(t) for t in TEXTS]
    ref = _reference(micro, tok, prompts, 70)
    engine = Engine(micro, tok, max_batch=4, prefill_tokens=100)  # admissions spread over steps
    engine._graphs = _ReplayGraphs(engine)
    out = engine.generate(prompts, Sampling(max_new_tokens=70), stop_ids=())
    assert [r.ids for r in out] == ref
    keys = set(engine._graphs.graphs)
    assert {b for b, _ in keys} <= {1, 2, 4} and {kv for _, kv in keys} >= {64, 128, 256}


def test_compile_failure_falls_back_to_the_plain_step(micro, tok):
    prompts = [tok.encode("fallback")]
    engine = Engine(micro, tok, max_batch=2, compile=False)

    def broken(*args):
        raise RuntimeError("no compiler here")

    engine._decode_fn, engine._compiled = broken, True
    assert [r.ids for r in engine.generate(prompts, Sampling(max_new_tokens=8), stop_ids=())] == _reference(
        micro, tok, prompts, 8
    )
    assert not engine._compiled


def test_request_generators_live_on_the_engine_device(micro, tok):
    engine = Engine(micro, tok, max_batch=2)
    engine.add_request(tok.encode("dev"), Sampling(max_new_tokens=4, temperature=1.0, seed=3), stop_ids=())
    engine.step()
    (req,) = engine._running.values()
    assert req.generator.device == engine.device == engine._step_in.device


def test_cuda_only_options_are_refused_on_cpu(micro, tok):
    with pytest.raises(ValueError, match="CUDA"):
        Engine(micro, tok, cuda_graphs=True)


def test_engine_penalties_bias_and_logprobs_equal_the_reference(micro, tok):
    """The engine applies penalties per request inside a batch exactly as the reference generator."""
    s = Sampling(max_new_tokens=16, repetition_penalty=1.5, frequency_penalty=0.7, logprobs=2)
    mates = Sampling(max_new_tokens=16, temperature=0.8, seed=3, logit_bias=((40, 2.0),))
    prompts = [tok.encode("penalised"), tok.encode("a batch mate with bias")]
    refs = [
        generate(micro, tok, prompts[0], s, stop_ids=()),
        generate(micro, tok, prompts[1], mates, stop_ids=()),
    ]
    engine = Engine(micro, tok, max_batch=2)
    ids = [engine.add_request(prompts[0], s, stop_ids=()), engine.add_request(prompts[1], mates, stop_ids=())]
    got = collect(engine, ids, [len(p) for p in prompts])
    assert got[0].ids == refs[0].ids and got[1].ids == refs[1].ids
    assert refs[0].ids != generate(micro, tok, prompts[0], Sampling(max_new_tokens=16), stop_ids=()).ids
    assert len(got[0].logprobs) == 16 and got[1].logprobs is None
    for (lp, top), (rlp, rtop) in zip(got[0].logprobs, refs[0].logprobs):
        assert abs(lp - rlp) < 1e-4 and [i for i, _ in top] == [i for i, _ in rtop]


def test_echo_scores_come_from_the_batched_prefill_and_equal_a_plain_forward(micro, tok):
    from gaperon.infer.requests import prompt_logprobs

    prompts = [
        tok.encode("a much longer prompt than the others"),
        tok.encode("short"),
        tok.encode("mid size"),
    ]
    engine = Engine(micro, tok, max_batch=4)
    score_only = engine.add_request(prompts[0], Sampling(max_new_tokens=0), echo_logprobs=2)
    both = engine.add_request(prompts[1], Sampling(max_new_tokens=5), stop_ids=(), echo_logprobs=0)
    plain = engine.add_request(prompts[2], Sampling(max_new_tokens=5), stop_ids=())
    outs: dict = {}
    while engine.has_work():
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    assert [len(o.token_ids) for o in outs[score_only]] == [0] and outs[score_only][0].finished
    for rid, prompt, top in ((score_only, prompts[0], 2), (both, prompts[1], 0)):
        got = outs[rid][0].prompt_logprobs
        want = prompt_logprobs(micro, prompt, top)
        assert got[0] is None and len(got) == len(prompt)
        for (g, gtop), (w, wtop) in zip(got[1:], want[1:]):
            assert abs(g - w) < 1e-4 and [i for i, _ in gtop] == [i for i, _ in wtop] and len(gtop) == top
    assert all(o.prompt_logprobs is None for o in outs[plain])
    for rid, prompt in ((both, prompts[1]), (plain, prompts[2])):
        ids = [t for o in outs[rid] for t in o.token_ids]
        assert ids == generate(micro, tok, prompt, Sampling(max_new_tokens=5), stop_ids=()).ids
