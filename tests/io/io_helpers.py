"""Helpers for interchange tests: random tiny models and tiny GGUF files written the way llama.cpp does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gaperon.model.llama import Llama, rope_tables
from gaperon.model.presets import build, get_preset
from gaperon.tokenizer.tiktoken_ranks import byte_to_unicode

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def random_llama(preset: str = "micro", seed: int = 0, **overrides) -> Llama:
    """A random model whose RMSNorm gains are random too (not all 1.0), so a wrong gain scale or a
    missing gain shows up in the logits. Plain normal draws: much faster than the real init."""
    cfg = get_preset(preset, **overrides)
    model = build(cfg, device="meta").to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.5 + torch.rand(p.shape, generator=gen)) / cfg.norm_gain_scale)
            else:
                p.normal_(0.0, 0.02 if "embed" in name or "lm_head" in name else 0.05, generator=gen)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rope_cos, model.rope_sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    return model.eval()


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's Q/K row permutation (rotate-half -> interleaved pairs)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_vocab(size: int) -> tuple[list[str], list[int], list[str]]:
    """A byte-level vocabulary: 256 bytes, 3 merges, ChatML specials, reserved fillers (all control)."""
    tokens = [byte_to_unicode()[b] for b in range(256)] + ["Ġt", "he", "Ġthe"]
    merges = ["Ġ t", "h e", "Ġt he"]
    types = [1] * len(tokens)
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        tokens.append(special)
        types.append(3)
    while len(tokens) < size:
        tokens.append(f"<|reserved_{len(tokens)}|>")
        types.append(3)
    return tokens, types, merges


CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_llama_gguf(
    path: Path,
    model: Llama,
    *,
    arch: str = "llama",
    qtype: str = "F32",
    tensor_override: dict | None = None,
) -> Path:
    """Write `model` as llama.cpp would: GGUF names, Q/K permuted, weights in `qtype`, a tiny
    byte-level tokenizer. `tensor_override` maps a GGUF tensor name to (raw numpy data, GGML type)."""
    import gguf

    cfg = model.cfg
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    tokens, types, merges = tiny_vocab(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_chat_template(CHATML)
    names = {
        "embed_tokens.weight": "token_embd.weight",
        "norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    override = tensor_override or {}
    for name, p in model.named_parameters():
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            gname = f"blk.{i}.{layer[rest.removesuffix('.weight')]}.weight"
        else:
            gname = names[name]
        data = p.detach().float().numpy().copy()
        if name.endswith("norm.weight"):
            data = data * cfg.norm_gain_scale
        if name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, cfg.n_kv_heads)
        if gname in override:
            raw, raw_type = override[gname]
            w.add_tensor(gname, raw, raw_dtype=raw_type)
        elif data.ndim == 1 or qtype == "F32":
            w.add_tensor(gname, data.astype(np.float32))
        else:
            qt = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gname, gguf.quants.quantize(data, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_run(run_dir, model, tok=None, step=3):
    """A training run folder as the trainer writes it (model_config.json, tokenizer/, one DCP checkpoint)."""
    from gaperon.train import checkpoint

    run_dir.mkdir(parents=True)
    (run_dir / "model_config.json").write_text(json.dumps({**model.cfg.to_dict(), "precision": "fp32"}))
    if tok is not None:
        tok.save(run_dir / "tokenizer")
    checkpoint.save(run_dir, step, model, None, {}, keep_last=2)
    return run_dir
