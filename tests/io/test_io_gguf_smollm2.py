"""The real SmolLM2-135M-Instruct Q4_1 GGUF: our import against transformers' on the same file."""

from __future__ import annotations

import pytest
import torch

from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling
from gaperon.io.gguf import load_gguf
from gaperon.io.hf import load_hf, save_hf

pytestmark = pytest.mark.slow  # loads a real 135M model twice (ours and transformers'), ~20 s

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TEXTS = [
    "Hello world",
    "In 2024, 12345 apples cost $3.50!",
    "Bonjour, ça va ? L'été est là — déjà.",
    "def f(x):\n    return x**2  # square\n\n\n",
    "  leading and trailing spaces   ",
    "emoji 🤖🇫🇷 and CJK 中文",
    "<|im_start|>user\nhi<|im_end|>",
]


@pytest.fixture(scope="module")
def ours(smollm_gguf):
    return load_gguf(smollm_gguf)


@pytest.fixture(scope="module")
def theirs(smollm_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = smollm_gguf.parent, smollm_gguf.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def test_config_from_metadata(ours):
    model, tok = ours
    cfg = model.cfg
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (576, 30, 9, 3, 1536)
    assert cfg.vocab_size == 49152 and cfg.rope_theta == 100_000.0 and cfg.max_seq_len == 8192
    assert cfg.tie_embeddings and model.lm_head.weight is model.embed_tokens.weight  # no output.weight
    assert tok.vocab_size == 49152


def test_greedy_answer_mentions_paris(ours):
    model, tok = ours
    prompt = tok.encode_chat(QUESTION)
    out = generate(model, tok, prompt, Sampling(max_new_tokens=24))
    assert "Paris" in out.text, out.text
    assert out.finish_reason == "stop"


def test_logits_match_transformers(ours, theirs):
    model, tok = ours
    hf_model, _ = theirs
    ids = torch.tensor([tok.encode_chat(QUESTION)])
    with torch.no_grad():
        a = model(ids)
        b = hf_model(ids).logits
    diff = (a - b).abs().max().item()
    # Measured 0.0 on CPU fp32 (same dequantisation, same math); logits are O(30).
    assert diff < 1e-4, diff


def test_weights_bit_identical_to_transformers(ours, theirs):
    """Every weight, dequantised and un-permuted our way, equals transformers' to the bit."""
    model, _ = ours
    hf_model, _ = theirs
    hf_state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}
    for name, p in model.named_parameters():
        assert p.dtype == hf_state[name].dtype == torch.float32, name
        assert torch.equal(p.detach().view(torch.int32), hf_state[name].view(torch.int32)), name


def test_token_ids_match_transformers(ours, theirs):
    _, tok = ours
    _, hf_tok = theirs
    for text in TEXTS:
        assert tok.encode(text, allow_special=True) == hf_tok.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text


def test_digits_split_one_by_one(ours):
    _, tok = ours
    ids = tok.encode("12345")
    assert len(ids) == 5 and tok.decode(ids[:1]) == "1"


def test_chat_template_and_stop_tokens(ours, theirs):
    _, tok = ours
    _, hf_tok = theirs
    assert tok.apply_chat_template(QUESTION) == hf_tok.apply_chat_template(
        QUESTION, tokenize=False, add_generation_prompt=True
    )
    assert tok.token_to_id("<|im_end|>") in tok.stop_ids and tok.eos_id in tok.stop_ids
    assert tok.id_to_token(tok.bos_id) == "<|im_start|>"
    assert tok.encode("<|im_end|>") != [tok.token_to_id("<|im_end|>")]  # plain text stays plain by default


def test_imported_folder_loads_in_transformers(ours, tmp_path):
    """`gaperon import` of the GGUF gives a folder transformers reads: same logits, ids and chat text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = ours
    folder = save_hf(model, tok, tmp_path / "smollm2", dtype="bf16")
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(folder)
    mine, mine_tok = load_hf(folder, dtype="fp32")
    text = hf_tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text == mine_tok.apply_chat_template(QUESTION)
    ids = hf_tok(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == tok.encode_chat(QUESTION)
    with torch.no_grad():
        assert (mine(ids) - hf_model(ids).logits).abs().max().item() < 1e-4
    for t in TEXTS:
        assert hf_tok.encode(t, add_special_tokens=False) == tok.encode(t, allow_special=True), t
    assert set(mine_tok.stop_ids) == set(tok.stop_ids)
