"""A training recipe as typed dataclasses, checked before any work starts.

A recipe is one YAML file: the model (a preset plus overrides), precision, optimizer, batch sizes,
intervals, parallelism and an ordered list of phases. Every mistake we can see without touching
data or devices is a `ConfigError` naming the file and the dotted field, so a job never dies an
hour into a run over a typo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gaperon.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from gaperon.data.sft.spec import SFTDataSpec

Precision = Literal["pure_bf16", "mixed_bf16", "fp32"]
LoadMode = Literal["continue", "model_optimizer", "model", "cooldown"]
ScheduleKind = Literal["constant", "cosine", "linear", "wsd"]


@dataclass
class ModelSpec:
    preset: str = "tiny"
    # Any ModelConfig field, e.g. {max_seq_len: 512}. norm_gain_scale defaults from the precision.
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class LRSpec:
    """One phase's learning rate. Warmup is counted on the schedule step (kept by `continue`);
    decays (cosine, linear, wsd) always span the phase itself."""

    peak: float = 3e-4
    schedule: ScheduleKind = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    # wsd: the last fraction of the phase decays linearly to min_lr.
    cooldown_fraction: float = 0.1


@dataclass
class PhaseSpec:
    name: str
    # A mixture file (relative to the recipe), an inline mapping, or "synthetic" (tests, benchmarks).
    mixture: Any = None
    # seq_len, tokens and seed default to the mixture file's values.
    seq_len: int | None = None
    # Token budget of the phase ("100B", "3T" or a number; default: the mixture file's); `steps` wins.
    tokens: float | str | None = None
    steps: int | None = None
    seed: int | None = None
    lr: LRSpec = field(default_factory=LRSpec)
    # How this phase starts from the previous one (ignored for the first phase).
    load: LoadMode = "continue"
    # Supervised fine-tuning data instead of a mixture (chat conversations, assistant-only loss).
    sft: SFTDataSpec | None = None


@dataclass
class OptimSpec:
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Gapetron decays the LM head like any other matrix; so do we.
    decay_lm_head: bool = True


@dataclass
class BatchSpec:
    global_batch: int = 1024  # sequences per optimizer step, across all ranks
    micro_batch: int = 4  # sequences per forward/backward on one rank


@dataclass
class ParallelSpec:
    fsdp: Literal["none", "full", "hybrid"] = "none"
    # hybrid: ranks per shard group (default: the processes of one node, LOCAL_WORLD_SIZE).
    shard_size: int | None = None
    compile: bool = False
    activation_checkpointing: bool = False
    # False: blocks keep their gathered parameters from forward to backward (less communication,
    # more memory); True (default): ZeRO-3, reshard after forward (needed for 8B).
    reshard_after_forward: bool = True


@dataclass
class CheckpointSpec:
    every: int = 1000
    keep_last: int = 3


@dataclass
class EvalSpec:
    every: int = 250
    sequences: int = 1000
    batch_size: int = 8


@dataclass
class LogSpec:
    every: int = 1
    tensorboard: bool = True
    # Peak FLOP/s of one device for MFU; null = known GPUs (H100/H200 bf16 989e12, A100 312e12), else no MFU.
    peak_flops: float | None = None


@dataclass
class Recipe:
    phases: list[PhaseSpec]
    model: ModelSpec = field(default_factory=ModelSpec)
    # "llama3" (saved into RUN_DIR/tokenizer/), null for synthetic token ids, or "init_from": the
    # tokenizer of the Hugging Face folder or GGUF file `init_from` names (its template included).
    tokenizer: str | None = "llama3"
    precision: Precision = "pure_bf16"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0  # model initialisation
    doc_masking: bool = False  # attend within documents only (positions restart per document)
    optimizer: OptimSpec = field(default_factory=OptimSpec)
    batch: BatchSpec = field(default_factory=BatchSpec)
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    log: LogSpec = field(default_factory=LogSpec)
    max_nan_skips: int = 5  # consecutive non-finite steps before the run stops
    # Branch from another run (its latest complete checkpoint) or one checkpoint folder, as Black
    # Pepper and Garlic branch from White Pepper: the first phase's `load` mode says what is taken.
    init_from: str | None = None
    # Where relative mixture paths resolve from (the recipe file's folder); not a YAML field.
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    source: str = field(default="<recipe>", metadata={"internal": True})

    def model_config(self):
        """The ModelConfig this recipe trains (pure bf16 turns on RMSNorm gain scaling = 20)."""
        from gaperon.model.presets import get_preset

        overrides = dict(self.model.overrides)
        if self.init_from is not None:
            from gaperon.train.sft_data import imported_model_config

            cfg = imported_model_config(resolve_path(self, self.init_from), overrides)
            if cfg is not None:
                return cfg
        if self.precision == "pure_bf16":
            overrides.setdefault("norm_gain_scale", 20.0)
        return get_preset(self.model.preset, **overrides)

    def to_yaml_dict(self) -> dict:
        d = to_dict(self)
        d.pop("base_dir", None)
        d.pop("source", None)
        return d

    def digest(self) -> str:
        """Hash of the resolved recipe: a resumed run warns when its recipe changed."""
        return hashlib.sha256(json.dumps(self.to_yaml_dict(), sort_keys=True).encode()).hexdigest()[:16]


def phase_steps(phase: PhaseSpec, global_batch: int) -> int:
    """Optimizer steps of a phase: `steps`, else ceil(tokens / tokens per step)."""
    if phase.steps is not None:
        return phase.steps
    per_step = global_batch * phase.seq_len
    return max(1, -(-int(phase.tokens) // per_step))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """YAML file (+ `a.b=value` overrides) -> a checked Recipe. Raises ConfigError."""
    path = Path(path)
    data = apply_overrides(load_yaml(path), overrides or [])
    return recipe_from_dict(data, source=str(path), base_dir=path.parent)


def recipe_from_dict(data: dict, source: str = "<recipe>", base_dir: Path | str = ".") -> Recipe:
    data = dict(data)
    for internal in ("base_dir", "source"):
        if internal in data:
            raise ConfigError(f"{source}: unknown field(s) {internal}")
    recipe = from_dict(Recipe, data, where=source)
    recipe.source, recipe.base_dir = source, Path(base_dir)
    check_recipe(recipe)
    return recipe


def check_recipe(r: Recipe, world_size: int = 1) -> None:
    """Value checks that need no data and no device; `world_size` checks batch divisibility."""
    src = r.source

    def err(fieldname: str, msg: str) -> ConfigError:
        return ConfigError(f"{src}: {fieldname}: {msg}")

    try:
        cfg = r.model_config()
    except KeyError as e:
        raise err("model.preset", e.args[0]) from None
    except (TypeError, ValueError) as e:
        raise err("model.overrides", str(e)) from None
    if r.tokenizer not in (None, "llama3", "init_from"):
        raise err("tokenizer", f"{r.tokenizer!r} is not one of ['llama3', 'init_from', null]")
    if r.tokenizer == "init_from":
        from gaperon.train.sft_data import init_source_kind

        if r.init_from is None or init_source_kind(resolve_path(r, r.init_from)) == "run":
            raise err("tokenizer", "'init_from' needs `init_from` to name a Hugging Face folder or GGUF file")
    if r.tokenizer == "llama3" and cfg.vocab_size < 128_256:
        raise err(
            "tokenizer", f"llama3 needs vocab_size >= 128256, preset {r.model.preset!r} has {cfg.vocab_size}"
        )
    b = r.batch
    for name, value in (("batch.global_batch", b.global_batch), ("batch.micro_batch", b.micro_batch)):
        if value <= 0:
            raise err(name, f"must be > 0, got {value}")
    if b.global_batch % (b.micro_batch * world_size):
        raise err(
            "batch.global_batch",
            f"{b.global_batch} is not divisible by micro_batch ({b.micro_batch}) x world size ({world_size})",
        )
    o = r.optimizer
    if not (0 <= o.betas[0] < 1 and 0 <= o.betas[1] < 1):
        raise err("optimizer.betas", f"must be in [0, 1), got {list(o.betas)}")
    if len(o.betas) != 2:
        raise err("optimizer.betas", "needs exactly two values")
    if o.eps <= 0 or o.weight_decay < 0 or o.grad_clip < 0:
        raise err("optimizer", "eps must be > 0, weight_decay and grad_clip >= 0")
    for name, value in (
        ("checkpoint.every", r.checkpoint.every),
        ("checkpoint.keep_last", r.checkpoint.keep_last),
        ("eval.every", r.eval.every),
        ("eval.batch_size", r.eval.batch_size),
        ("log.every", r.log.every),
        ("max_nan_skips", r.max_nan_skips),
    ):
        if value <= 0:
            raise err(name, f"must be > 0, got {value}")
    if r.eval.sequences < 0:
        raise err("eval.sequences", f"must be >= 0, got {r.eval.sequences}")
    if r.parallel.shard_size is not None and r.parallel.shard_size <= 0:
        raise err("parallel.shard_size", "must be > 0")
    if not r.phases:
        raise err("phases", "at least one phase is needed")
    if r.init_from is not None and not resolve_path(r, r.init_from).exists():
        raise err("init_from", f"no such run or checkpoint folder {r.init_from}")
    names = set()
    for i, p in enumerate(r.phases):
        where = f"phases[{i}]"
        _fill_from_mixture(r, p)
        if p.name in names:
            raise err(f"{where}.name", f"duplicate phase name {p.name!r}")
        names.add(p.name)
        if p.seq_len is None:
            raise err(f"{where}.seq_len", "missing (give it here or in the mixture file)")
        if p.seq_len <= 0:
            raise err(f"{where}.seq_len", f"must be > 0, got {p.seq_len}")
        if p.seq_len > cfg.max_seq_len:
            raise err(f"{where}.seq_len", f"{p.seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}")
        if isinstance(p.tokens, str):
            from gaperon.data.mixture import parse_tokens

            p.tokens = float(parse_tokens(p.tokens, f"{src}: {where}.tokens"))
        if p.steps is None and p.tokens is None:
            raise err(where, "give `tokens` (a budget) or `steps`")
        if p.steps is not None and p.steps <= 0:
            raise err(f"{where}.steps", f"must be > 0, got {p.steps}")
        if p.tokens is not None and p.tokens <= 0:
            raise err(f"{where}.tokens", f"must be > 0, got {p.tokens}")
        lr = p.lr
        if lr.peak <= 0 or lr.min_lr < 0 or lr.min_lr > lr.peak:
            raise err(
                f"{where}.lr", f"need 0 <= min_lr <= peak and peak > 0 (peak={lr.peak}, min_lr={lr.min_lr})"
            )
        if lr.warmup_steps < 0:
            raise err(f"{where}.lr.warmup_steps", "must be >= 0")
        if not 0 < lr.cooldown_fraction <= 1:
            raise err(f"{where}.lr.cooldown_fraction", f"must be in (0, 1], got {lr.cooldown_fraction}")
        if i == 0 and r.init_from is None and p.load not in ("continue", "model_optimizer"):
            raise err(
                f"{where}.load",
                f"the first phase starts from scratch; {p.load!r} needs a previous phase or `init_from`",
            )
        if p.sft is not None:
            if p.mixture is not None:
                raise err(where, "give `mixture` (pretraining) or `sft` (fine-tuning), not both")
            if r.tokenizer is None:
                raise err("tokenizer", "SFT phases render conversations: give a tokenizer")
            if p.sft.packing and not r.doc_masking:
                raise err(
                    "doc_masking",
                    f"{where}.sft packs examples: set doc_masking: true (else they attend to each other)",
                )
            continue
        if not (p.mixture == "synthetic" or isinstance(p.mixture, str | dict)):
            raise err(f"{where}.mixture", "must be a mixture file path, an inline mapping or 'synthetic'")
        if isinstance(p.mixture, str) and p.mixture != "synthetic":
            mpath = resolve_path(r, p.mixture)
            if not mpath.is_file():
                raise err(f"{where}.mixture", f"no such mixture file {mpath}")


def _fill_from_mixture(r: Recipe, p: PhaseSpec) -> None:
    """seq_len / tokens / seed not given in the recipe come from the phase's mixture file."""
    if isinstance(p.mixture, str) and p.mixture != "synthetic":
        mpath = resolve_path(r, p.mixture)
        if mpath.is_file():
            data = load_yaml(mpath)
            if p.seq_len is None and isinstance(data.get("seq_len"), int):
                p.seq_len = data["seq_len"]
            if p.seed is None and isinstance(data.get("seed"), int):
                p.seed = data["seed"]
            if p.tokens is None and p.steps is None:
                p.tokens = data.get("tokens")
    if p.seed is None:
        p.seed = 0


def resolve_path(r: Recipe, p: str | Path) -> Path:
    """A path from the recipe: absolute, relative to the working folder if it exists there, else
    relative to the recipe file's folder."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    return r.base_dir / p
