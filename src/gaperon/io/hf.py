"""Hugging Face `LlamaForCausalLM` and `Olmo2ForCausalLM` folders, both ways.

Our state-dict names are HF's minus the `model.` prefix (for both families) and RoPE uses HF's
rotate-half layout, so the conversion is a rename plus the RMSNorm gain scale (folders always hold
true gains). Loading builds the model on the meta device and fills it tensor by tensor from lazily
opened safetensors, so an 8B folder needs 1x its size in memory, not 2x.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gaperon.atomic import atomic_path
from gaperon.io.errors import ModelFormatError
from gaperon.io.safetensors_files import INDEX_NAME, SINGLE_NAME, TensorStore, write_sharded
from gaperon.model.llama import Llama, ModelConfig, is_norm_gain
from gaperon.model.presets import build

if TYPE_CHECKING:
    from gaperon.tokenizer import Tokenizer

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# Sampling defaults of the Llama-3.1 releases; a folder without them would decode greedily.
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in _DTYPE_NAMES:
            raise ValueError(f"unsupported dtype {dtype}; use bf16, fp16 or fp32")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32")
    return _DTYPES[key]


def hf_name(name: str) -> str:
    """Our parameter name -> the HF LlamaForCausalLM name."""
    return name if name.startswith("lm_head.") else f"model.{name}"


# ---------------------------------------------------------------------------------------------- saving


# Our architecture name -> (model_type, HF class).
HF_ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "olmo2": ("olmo2", "Olmo2ForCausalLM")}


def hf_config(cfg: ModelConfig, dtype: torch.dtype, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """config.json for a `LlamaForCausalLM` or `Olmo2ForCausalLM`, readable by transformers 4.x and 5.x."""
    if cfg.architecture not in HF_ARCHITECTURES:
        raise ModelFormatError(
            f"qk_norm={cfg.qk_norm} with post_norm={cfg.post_norm} matches no Hugging Face architecture "
            "(Llama has neither, OLMo-2 both)"
        )
    model_type, cls = HF_ARCHITECTURES[cfg.architecture]
    bos, eos = cfg.bos_token_id, cfg.eos_token_id
    if tokenizer is not None:
        bos, eos = tokenizer.bos_id, tokenizer.eos_id
    return {
        "architectures": [cls],
        "model_type": model_type,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_seq_len,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": _DTYPE_NAMES[dtype],
        "dtype": _DTYPE_NAMES[dtype],
    }


def generation_config(cfg: ModelConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """generation_config.json: every id that ends a turn stops generation (eos, and eot for chat)."""
    if tokenizer is not None:
        bos, eos, pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        stops = [eos] + sorted(set(tokenizer.stop_ids) - {eos})
    else:
        bos, pad = cfg.bos_token_id, None
        stops = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    out: dict[str, Any] = {"bos_token_id": bos, "eos_token_id": stops[0] if len(stops) == 1 else stops}
    out["pad_token_id"] = pad if pad is not None else stops[0]
    return {**out, **GENERATION_DEFAULTS}


def save_hf(
    model: Llama,
    tokenizer: Tokenizer | None,
    out_dir: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = "2GB",
) -> Path:
    """Write `model` (+ tokenizer files) as a Hugging Face LlamaForCausalLM folder at `out_dir`.

    The folder is assembled under a temporary name and renamed at the end, so `out_dir` is never
    half-written (an existing folder there is replaced only once the new one is complete).
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model wraps the real one
    cfg = model.cfg
    target = parse_dtype(dtype) or next(model.parameters()).dtype
    if target not in _DTYPE_NAMES:
        raise ValueError(f"cannot export weights as {target}; use bf16, fp16 or fp32")
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only "
            f"{cfg.vocab_size} embedding rows; export it with its own tokenizer"
        )
    params = dict(model.named_parameters())  # shared (tied) parameters appear once
    names = [n for n in params if not (cfg.tie_embeddings and n == "lm_head.weight")]
    elem = torch.empty((), dtype=target).element_size()

    def tensor(hf: str) -> torch.Tensor:
        name = hf.removeprefix("model.")
        t = params[name].detach()
        if is_norm_gain(name) and cfg.norm_gain_scale != 1.0:
            t = t.float() * cfg.norm_gain_scale  # interchange formats hold the true gain
        return t.to(device="cpu", dtype=target)

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_sharded(((hf_name(n), params[n].numel() * elem) for n in names), tensor, tmp, max_shard_size)
        _write_json(tmp / "config.json", hf_config(cfg, target, tokenizer))
        _write_json(tmp / "generation_config.json", generation_config(cfg, tokenizer))
        if tokenizer is not None:
            tokenizer.save(tmp)
    return out_dir


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- loading


def read_hf_config(folder: Path, *, norm_gain_scale: float = 1.0) -> tuple[ModelConfig, dict]:
    """ModelConfig from a folder's config.json, refusing what our model does not compute."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (not a Hugging Face model folder)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    _check_supported(path, raw)
    try:
        return ModelConfig(**_config_fields(path, raw, norm_gain_scale)), raw
    except ValueError as e:
        raise ModelFormatError(f"{path}: {e}") from None


def _check_supported(path: Path, raw: dict) -> None:
    """Refuse, naming the field, any config.json our model would compute differently."""
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    known = dict(HF_ARCHITECTURES.values())
    if model_type not in known:
        raise ModelFormatError(
            f"{path}: model_type is {model_type!r}; only llama (LlamaForCausalLM) and olmo2 "
            "(Olmo2ForCausalLM) are supported"
        )
    if archs and known[model_type] not in archs:
        raise ModelFormatError(f"{path}: architectures is {archs}; expected {known[model_type]}")
    if raw.get("rope_scaling"):
        raise ModelFormatError(
            f"{path}: rope_scaling {raw['rope_scaling']} is not supported (only plain RoPE, as in Gaperon)"
        )
    rope = raw.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelFormatError(f"{path}: rope_parameters {rope} is not supported (only plain RoPE)")
    for key in ("attention_bias", "mlp_bias"):
        if raw.get(key):
            raise ModelFormatError(f"{path}: {key} is true; biases are not supported (Llama-3 has none)")
    if raw.get("hidden_act", "silu") != "silu":
        raise ModelFormatError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (only silu)")


def _config_fields(path: Path, raw: dict, norm_gain_scale: float) -> dict[str, Any]:
    rope = raw.get("rope_parameters") or {}
    olmo2 = raw.get("model_type") == "olmo2"
    try:
        dim, n_heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
        fields: dict[str, Any] = dict(
            vocab_size=int(raw["vocab_size"]),
            dim=dim,
            n_layers=int(raw["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(raw.get("num_key_value_heads") or n_heads),
            ffn_dim=int(raw["intermediate_size"]),
            max_seq_len=int(raw.get("max_position_embeddings", 4096)),
            rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10_000.0))),
            norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            norm_gain_scale=norm_gain_scale,
            init_std=float(raw.get("initializer_range", 0.02)),
            qk_norm=olmo2,
            post_norm=olmo2,
        )
        head_dim = raw.get("head_dim")
        if head_dim is not None and int(head_dim) != dim // n_heads:
            fields["attn_head_dim"] = int(head_dim)
    except KeyError as e:
        raise ModelFormatError(f"{path}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{path}: bad value ({e})") from None
    for key in ("bos_token_id", "eos_token_id"):
        if raw.get(key) is not None:
            fields[key] = raw[key]
    return fields


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = list(dict.fromkeys(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFormatError(f"{index}: not a valid safetensors index ({e!r})") from None
        for file in files:
            if not (folder / file).is_file():
                example = next(k for k, v in weight_map.items() if v == file)
                raise ModelFormatError(
                    f"{index}: lists {file} (e.g. for tensor {example!r}) but {folder / file} does not exist"
                )
        return [folder / f for f in files]
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFormatError(f"{folder}: no safetensors weights (model.safetensors or {INDEX_NAME})")
    return files


def _set_param(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(module_name), attr, nn.Parameter(value))


def load_state_from_store(
    model: Llama, store: TensorStore, where: Path, *, device: str | torch.device, dtype: torch.dtype
) -> None:
    """Fill a meta-built model from HF-named tensors, checking names and shapes; errors name the file."""
    cfg = model.cfg
    by_name: dict[str, str] = {}
    for key in store.infos:
        if key.endswith("rotary_emb.inv_freq"):  # old checkpoints saved the RoPE buffer; we recompute it
            continue
        by_name[key.removeprefix("model.")] = key
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if cfg.tie_embeddings:
        by_name.pop("lm_head.weight", None)  # some writers keep the tied copy; it is the embedding
    for name, key in by_name.items():
        if name not in expected:
            raise ModelFormatError(
                f"{store.infos[key].file}: unexpected tensor {key!r} for a {cfg.architecture} model"
            )
    for name, shape in expected.items():
        key = by_name.get(name)
        if key is None:
            raise ModelFormatError(f"{where}: tensor {hf_name(name)!r} is missing")
        info = store.infos[key]
        if info.shape != shape:
            raise ModelFormatError(
                f"{info.file}: tensor {key!r} has shape {list(info.shape)}, expected {list(shape)}"
            )
        t = store.get(key)
        if is_norm_gain(name) and cfg.norm_gain_scale != 1.0:
            t = t.float() / cfg.norm_gain_scale
        _set_param(model, name, t.to(device=device, dtype=dtype))
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_rope(device)


def load_hf(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    norm_gain_scale: float = 1.0,
) -> tuple[Llama, Tokenizer | None]:
    """Read any Hugging Face Llama or OLMo-2 folder (ours or a published one). dtype None = the
    folder's dtype. The tokenizer is None when the folder has no tokenizer.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    cfg, raw = read_hf_config(folder, norm_gain_scale=norm_gain_scale)
    store = TensorStore.from_files(_weight_files(folder))
    target = parse_dtype(dtype)
    if target is None:
        named = raw.get("dtype") or raw.get("torch_dtype")
        target = _DTYPES.get(str(named).lower()) if named else None
    target = target or torch.float32
    model = build(cfg, device="meta")
    load_state_from_store(model, store, folder, device=device, dtype=target)
    store.close()
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        from gaperon.tokenizer import load_tokenizer

        try:
            tokenizer = load_tokenizer(folder)
        except ValueError as e:  # the tokenizer's messages already name the file
            raise ModelFormatError(str(e)) from None
    return model, tokenizer
