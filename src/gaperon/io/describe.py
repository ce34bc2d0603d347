"""`gaperon info MODEL`: what a model folder, GGUF file or training run holds, without loading weights.

Reads only headers and small JSON files: the config, the tensors' dtypes from the safetensors or
GGUF headers, the tokenizer's presence and size, and whether a chat template is there. Parameter
counts and shapes come from building the model on the meta device.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from gaperon.dtypes import ALIASES, short_name
from gaperon.errors import ModelFormatError
from gaperon.io.loading import model_kind
from gaperon.io.run_format import MODEL_CONFIG, read_model_config
from gaperon.model.llama import ModelConfig
from gaperon.model.presets import build

_SAFETENSORS_DTYPES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def describe_model(path: str | Path) -> str:
    """A few lines about the model at `path` (any source `load_model` accepts)."""
    path = Path(path)
    kind = model_kind(path)
    if kind == "gguf":
        cfg, facts = _gguf_facts(path)
    elif kind == "hf":
        cfg, facts = _hf_facts(path)
    else:
        cfg, facts = _run_facts(path)
    model = build(cfg, device="meta")
    n = model.num_params()
    lines = [
        f"{path}: {facts.pop('kind')}, {n:,} parameters ({n / 1e9:.3f} B)",
        f"  dim={cfg.dim} layers={cfg.n_layers} heads={cfg.n_heads} kv_heads={cfg.n_kv_heads} "
        f"head_dim={cfg.head_dim} ffn={cfg.ffn_dim} vocab={cfg.vocab_size} ctx={cfg.max_seq_len} "
        f"rope_theta={cfg.rope_theta:g} tied={cfg.tie_embeddings}",
    ]
    lines += [f"  {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)


def _counts(names: list[str]) -> str:
    return ", ".join(f"{name} x{k}" for name, k in Counter(names).most_common())


def _gguf_facts(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    from gaperon.io.gguf import gguf_model_config, open_gguf
    from gaperon.io.gguf_tokenizer import gguf_bos_rule

    file = open_gguf(path)
    try:
        cfg = gguf_model_config(file, str(path))
        cfg.tie_embeddings = "output.weight" not in {t.name for t in file.tensors}
        n_tokens = file.array_length("tokenizer.ggml.tokens")
        facts: dict[str, Any] = {
            "kind": f"GGUF file ({file.get('general.name') or path.stem})",
            "tensor types": _counts([t.type_name for t in file.tensors]),
            "tokenizer": f"{file.get('tokenizer.ggml.model')} BPE, {n_tokens:,} tokens"
            if n_tokens
            else "none",
            "chat template": "yes" if "tokenizer.chat_template" in file else "no",
        }
        if n_tokens:
            facts["BOS before prompts"] = _yes_no(gguf_bos_rule(file))
    finally:
        file.close()
    return cfg, facts


def _hf_facts(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    from gaperon.io.hf import read_hf_config
    from gaperon.io.safetensors_files import read_header

    cfg, raw = read_hf_config(path)
    files = sorted(path.glob("*.safetensors"))
    dtypes = [_SAFETENSORS_DTYPES.get(i.dtype, i.dtype) for f in files for i in read_header(f).values()]
    declared = raw.get("torch_dtype") or raw.get("dtype")
    facts: dict[str, Any] = {
        "kind": "Hugging Face folder",
        "weights": f"{len(files)} safetensors file(s), {_counts(dtypes) or 'no tensors'}",
        "config dtype": short_name(declared) if declared in ALIASES else (declared or "unset"),
    }
    facts.update(_tokenizer_facts(path))
    return cfg, facts


def _run_facts(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    run = path.parent.parent if path.parent.name == "checkpoints" else path
    raw, precision = read_model_config(run)
    try:
        cfg = ModelConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{run / MODEL_CONFIG}: {e}") from None
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*") if p.is_dir())
    facts: dict[str, Any] = {
        "kind": "training run",
        "precision": precision,
        "checkpoints": ", ".join(ckpts) if ckpts else "none yet",
    }
    facts.update(_tokenizer_facts(run / "tokenizer"))
    return cfg, facts


def _tokenizer_facts(folder: Path) -> dict[str, str]:
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        return {"tokenizer": "none", "chat template": "no"}
    config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{folder / 'tokenizer_config.json'}: unreadable ({e})") from None
    template = bool(config.get("chat_template")) or (folder / "chat_template.jinja").is_file()
    name = "tokenizer.json" if (folder / "tokenizer.json").is_file() else "tokenizer.model (tiktoken)"
    eos = config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    from gaperon.tokenizer import load_tokenizer

    return {
        "tokenizer": name + (f", eos {eos}" if eos else ""),
        "chat template": "yes" if template else "no",
        # what generate, serve, eval and training apply (decided by the tokenizer, as loading it does)
        "BOS before prompts": _yes_no(load_tokenizer(folder).add_bos),
    }


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no (documents and plain prompts start without BOS)"
