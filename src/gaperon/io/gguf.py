"""Import llama.cpp GGUF files (llama architecture): weights dequantised, tokenizer rebuilt from metadata.

llama.cpp's converter permutes the rows of Q and K for Meta's interleaved RoPE; we invert that so
the weights are in HF's rotate-half layout, which is what our `Llama` computes. Q4_0, Q4_1 and Q8_0
are decoded by `gguf_file.dequantize_fast` (bit-identical to gguf's, several times faster); every other
type goes through the `gguf` package's own (`gguf.quants.dequantize`), so every type it knows (K-quants,
F16, BF16, F32, ...) is supported and anything else is refused by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gaperon.dtypes import parse_dtype
from gaperon.io.errors import ModelFormatError
from gaperon.io.gguf_file import GGUFFile, GGUFTensor, dequantize_fast
from gaperon.io.gguf_tokenizer import build_byte_level_bpe
from gaperon.io.progress import Progress
from gaperon.model.llama import Llama, ModelConfig
from gaperon.model.presets import build

if TYPE_CHECKING:
    from gaperon.tokenizer import Tokenizer

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def our_name(gguf_name: str) -> str | None:
    """GGUF tensor name -> our parameter name (None if it is not a Llama weight)."""
    m = _BLOCK.fullmatch(gguf_name)
    if m:
        sub = _LAYER_NAMES.get(m.group(2))
        return f"layers.{m.group(1)}.{sub}.weight" if sub else None
    stem = gguf_name.removesuffix(".weight")
    return f"{_TOP_NAMES[stem]}.weight" if gguf_name.endswith(".weight") and stem in _TOP_NAMES else None


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Invert llama.cpp's `permute` of Q/K rows (interleaved RoPE pairs -> rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def open_gguf(path: str | Path) -> GGUFFile:
    """The file's metadata (decoded lazily) and tensor layout; errors name the file."""
    return GGUFFile(path)


def gguf_model_config(meta: Mapping[str, Any], where: str) -> ModelConfig:
    """ModelConfig from `llama.*` metadata; refuses what our Llama does not compute."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelFormatError(f"{where}: general.architecture is {arch!r}; only llama is supported")

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise ModelFormatError(f"{where}: metadata llama.{key} is missing")
        if isinstance(value, list):
            raise ModelFormatError(f"{where}: llama.{key} varies per layer ({value[:4]}...); not supported")
        return value

    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ModelFormatError(
            f"{where}: llama.rope.scaling.type is {scaling!r}; RoPE scaling is not supported"
        )
    dim, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = dim // n_heads if n_heads else 0
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if meta.get(f"llama.{key}") not in (None, head_dim):
            raise ModelFormatError(
                f"{where}: llama.{key} is {meta[f'llama.{key}']}, expected embedding_length / "
                f"head_count = {head_dim}"
            )
    vocab = meta.get("llama.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or [])
    fields: dict[str, Any] = dict(
        vocab_size=int(vocab),
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        ffn_dim=int(get("feed_forward_length")),
        max_seq_len=int(get("context_length", 4096)),
        rope_theta=float(get("rope.freq_base", 10_000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
    )
    for key, name in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        if meta.get(f"tokenizer.ggml.{key}") is not None:
            fields[name] = int(meta[f"tokenizer.ggml.{key}"])
    try:
        return ModelConfig(**fields)
    except ValueError as e:
        raise ModelFormatError(f"{where}: {e}") from None


def rope_row_order(rows: int, n_heads: int) -> np.ndarray:
    """The row gather that does what `unpermute_rope_rows` does: out[i] = w[order[i]]."""
    return np.arange(rows).reshape(n_heads, rows // n_heads // 2, 2).transpose(0, 2, 1).reshape(-1)


def _dequantize(
    file: GGUFFile, t: GGUFTensor, where: str, row_order: np.ndarray | None = None
) -> torch.Tensor:
    """fp32 weights of one tensor (gguf's own dequantisation, so every type it knows works), its rows
    gathered in `row_order` first if given. Rows are gathered as raw bytes, before decoding: blocks
    never straddle rows, so the values are the same, and the bytes are a fraction of the fp32 size."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    data = file.tensor_data(t)
    if row_order is not None:
        data = data[row_order]  # a copy, in the new order
    if t.ggml_type == GGMLQuantizationType.F32:
        return torch.from_numpy(data.copy() if row_order is None else data)  # the map is read-only
    fast = dequantize_fast(data, t.ggml_type, t.shape)
    if fast is not None:
        return torch.from_numpy(fast)
    if data.ndim == 2:
        # Blocks never straddle rows, so k rows can be one long row: gguf then dequantises ~1M
        # values per call instead of 16 rows per call (its loop is Python per group of rows).
        rows = data.shape[0]
        k = max(1, min(rows, (1 << 20) // max(t.shape[-1], 1)))
        while rows % k:
            k -= 1
        data = data.reshape(rows // k, k * data.shape[1])
    try:
        arr = dequantize(data, GGMLQuantizationType(t.ggml_type))
    except NotImplementedError:
        raise ModelFormatError(
            f"{where}: tensor {t.name!r} has quantization type {t.type_name}, which cannot be dequantized"
        ) from None
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32).reshape(t.shape))


def gguf_tokenizer(meta: Mapping[str, Any], where: str, name: str, model_max_length: int = 4096) -> Tokenizer:
    from gaperon.tokenizer import Tokenizer

    spec = build_byte_level_bpe(meta, where)
    try:
        return Tokenizer.from_backend(
            spec.backend,
            bos_token=spec.bos_token,
            eos_token=spec.eos_token,
            chat_template=spec.chat_template,
            stop_tokens=spec.stop_tokens,
            pad_token=spec.pad_token,
            name=name,
            model_max_length=model_max_length,
            add_bos=spec.add_bos,
        )
    except ValueError as e:
        raise ModelFormatError(f"{where}: bad tokenizer metadata: {e}") from None


def load_gguf(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    progress: Progress | None = None,
) -> tuple[Llama, Tokenizer]:
    """Load a llama-architecture GGUF as (dequantised Llama, its own tokenizer).

    The model is built on the meta device and each parameter is set from its dequantised tensor,
    so no random initialisation runs and peak memory is one model plus one tensor in flight."""
    path = Path(path)
    where = str(path)
    target = parse_dtype(dtype) or torch.float32
    file = open_gguf(path)
    try:
        cfg = gguf_model_config(file, where)
        tensors = {t.name: t for t in file.tensors}
        if "rope_freqs.weight" in tensors:
            raise ModelFormatError(
                f"{where}: has tensor 'rope_freqs.weight' (Llama-3.1-style RoPE scaling), "
                "which is not supported"
            )
        cfg.tie_embeddings = "output.weight" not in tensors
        model = build(cfg, device="meta")
        plan = _match_tensors(model, tensors, where)
        bar = progress or Progress(None)
        bar.start(f"loading {path.name}", total=len(plan))

        def materialise(item: tuple[str, GGUFTensor]) -> tuple[str, torch.Tensor]:
            name, t = item
            order = None
            if name.endswith("q_proj.weight"):
                order = rope_row_order(t.shape[0], cfg.n_heads)
            elif name.endswith("k_proj.weight"):
                order = rope_row_order(t.shape[0], cfg.n_kv_heads)
            return name, _dequantize(file, t, where, order).to(device=device, dtype=target)

        # numpy's dequantisation releases the GIL on large arrays: a few threads overlap it, and
        # the tokenizer is built beside them (its metadata is read only by that task meanwhile).
        title = str(file.get("general.name") or path.stem)
        with ThreadPoolExecutor(max_workers=_threads() + 1) as pool:
            tok_task = pool.submit(gguf_tokenizer, file, where, title, cfg.max_seq_len)
            for name, w in pool.map(materialise, plan.items()):
                module_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(module_name), attr, nn.Parameter(w))
                bar.advance()
            tok = tok_task.result()
        if cfg.tie_embeddings:
            model.lm_head.weight = model.embed_tokens.weight
        model.reset_rope(device)
        bar.finish()
        return model, tok
    finally:
        file.close()


def _match_tensors(model: Llama, tensors: dict[str, GGUFTensor], where: str) -> dict[str, GGUFTensor]:
    """Our parameter name -> its GGUF tensor, after checking names and shapes."""
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    found: dict[str, GGUFTensor] = {}
    for gname, t in tensors.items():
        name = our_name(gname)
        if name is None or name not in expected:
            raise ModelFormatError(f"{where}: unexpected tensor {gname!r} for a llama model")
        found[name] = t
    for name, shape in expected.items():
        match = found.get(name)
        if match is None:
            raise ModelFormatError(f"{where}: tensor for {name!r} is missing")
        if match.shape != shape:
            raise ModelFormatError(
                f"{where}: tensor {match.name!r} has shape {list(match.shape)}, expected {list(shape)}"
            )
    return {name: found[name] for name in expected}


def _threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))
