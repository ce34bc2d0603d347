"""GGUF files written here the way llama.cpp writes them: exact weights back, and clear errors."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from io_helpers import llama_cpp_permute, random_llama, write_llama_gguf

from gaperon.io import ModelFormatError
from gaperon.io.gguf import load_gguf, rope_row_order, unpermute_rope_rows


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(8 * 2 * 4 * 3, dtype=np.float32).reshape(8 * 4, 6)
    for heads in (1, 2, 4):
        permuted = llama_cpp_permute(w, heads)
        back = unpermute_rope_rows(torch.from_numpy(permuted), heads)
        assert torch.equal(back, torch.from_numpy(w))
        # the load gathers raw rows in this order before decoding: it must undo the same permutation
        assert np.array_equal(permuted[rope_row_order(w.shape[0], heads)], w)


@pytest.mark.parametrize("tie", [False, True])
def test_f32_gguf_round_trip_is_exact(tmp_path, tie):
    model = random_llama("micro", tie_embeddings=tie, norm_gain_scale=20.0)
    path = write_llama_gguf(tmp_path / "m.gguf", model)
    if tie:  # llama.cpp writes no output.weight for tied models: that is how we detect tying
        assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}
    back, tok = load_gguf(path)
    assert back.cfg.tie_embeddings == tie
    x = torch.randint(0, 512, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (back(x) - model(x)).abs().max().item() < 1e-5
    assert tok.vocab_size == 512 and tok.id_to_token(tok.eos_id) == "<|im_end|>"


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16", "BF16"])
def test_quantized_gguf_close_to_original(tmp_path, qtype):
    model = random_llama("micro")
    back, _ = load_gguf(write_llama_gguf(tmp_path / "m.gguf", model, qtype=qtype))
    w, w_back = model.layers["1"].self_attn.q_proj.weight, back.layers["1"].self_attn.q_proj.weight
    rel = ((w_back - w).norm() / w.norm()).item()
    assert rel < {"Q8_0": 0.01, "Q4_0": 0.15, "Q4_1": 0.15, "F16": 1e-3, "BF16": 1e-2}[qtype]


def test_tokenizer_from_metadata(tmp_path):
    _, tok = load_gguf(write_llama_gguf(tmp_path / "m.gguf", random_llama("micro")))
    ids = tok.encode(" the")
    assert ids == [tok.token_to_id("Ġthe")]  # merges applied
    assert tok.decode(tok.encode("Très bien, 42!")) == "Très bien, 42!"
    assert tok.token_to_id("<|im_end|>") in tok.stop_ids
    assert tok.pad_id == tok.token_to_id("<|endoftext|>")
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode_chat([{"role": "user", "content": "hi"}])[0] == tok.token_to_id("<|im_start|>")


def test_tokenizer_vocab_spelling_duplicates_and_bad_merges():
    """Tokens spelled outside the byte alphabet are re-spelled byte-level, a repeated spelling keeps
    its first id, and a merge without a space is refused by name (the whole-list fast paths must
    give what the per-token loop gave)."""
    from gaperon.io.gguf_tokenizer import build_byte_level_bpe

    tokens = ["a", "b", "ab", "a b", "aĠb", "ab", "<eos>"]  # "a b" re-spells to "aĠb": ids 3 and 4
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["a b"],
        "tokenizer.ggml.eos_token_id": 6,
    }
    vocab = build_byte_level_bpe(meta, "t.gguf").backend.get_vocab()
    assert vocab["aĠb"] == 3 and vocab["ab"] == 2 and vocab["a"] == 0
    with pytest.raises(ModelFormatError, match=r"t\.gguf: bad merge 'ab'"):
        build_byte_level_bpe({**meta, "tokenizer.ggml.merges": ["a b", "ab"]}, "t.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a gguf")
    with pytest.raises(ModelFormatError, match=r"model\.gguf: not a GGUF file"):
        load_gguf(path)


def test_truncated_gguf(tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf", random_llama("micro"))
    data = path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 64):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match=rf"cut{cut}\.gguf: truncated"):
            load_gguf(bad)


def test_other_architecture(tmp_path):
    path = write_llama_gguf(tmp_path / "g.gguf", random_llama("micro"), arch="gpt2")
    with pytest.raises(
        ModelFormatError, match=r"g\.gguf: general\.architecture is 'gpt2'; only llama is supported"
    ):
        load_gguf(path)


def test_unsupported_quant_type_names_tensor(tmp_path):
    raw = np.zeros((192, 64 // 32 * 40), dtype=np.uint8)  # Q8_1: 40 bytes per block of 32
    override = {"blk.1.ffn_up.weight": (raw, gguf.GGMLQuantizationType.Q8_1)}
    path = write_llama_gguf(tmp_path / "q.gguf", random_llama("micro"), tensor_override=override)
    with pytest.raises(
        ModelFormatError, match=r"q\.gguf: tensor 'blk\.1\.ffn_up\.weight' has quantization type Q8_1"
    ):
        load_gguf(path)


def test_wrong_shape_names_tensor(tmp_path):
    raw = np.zeros((100, 64), dtype=np.float32)
    override = {"blk.0.attn_v.weight": (raw, gguf.GGMLQuantizationType.F32)}
    path = write_llama_gguf(tmp_path / "s.gguf", random_llama("micro"), tensor_override=override)
    with pytest.raises(
        ModelFormatError,
        match=r"s\.gguf: tensor 'blk\.0\.attn_v\.weight' has shape \[100, 64\], expected \[32, 64\]",
    ):
        load_gguf(path)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_fast_dequantize_bit_identical_to_gguf(qtype):
    """Our whole-tensor decoder against gguf's own on the same bytes (any difference in the order of
    float32 operations, the nibble order or the scale/min layout shows up as unequal bits)."""
    from gaperon.io.gguf_file import dequantize_fast

    kind = gguf.GGMLQuantizationType[qtype]
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((96, 256)) * rng.uniform(0.01, 30, (96, 1))).astype(np.float32)
    values[3] = 0.0  # a block of zeros (scale 0)
    values[5, :32] = 7.25  # a constant block (Q4_1: range 0)
    raw = gguf.quants.quantize(values, kind)
    ours = dequantize_fast(raw, int(kind), values.shape)
    ref = gguf.quants.dequantize(raw, kind)
    assert ours is not None and ours.dtype == np.float32
    assert np.array_equal(ours.view(np.int32), ref.view(np.int32))
    assert dequantize_fast(raw, int(gguf.GGMLQuantizationType.Q5_0), values.shape) is None
