"""A training recipe as typed dataclasses, checked before any work starts.

A recipe is one YAML file: the model (a preset plus overrides), precision, optimizer, batch sizes,
intervals, parallelism and an ordered list of phases. Every mistake we can see without touching
data or devices is a `ConfigError` naming the file and the dotted field, so a job never dies an
hour into a run over a typo.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gaperon.config import ConfigError, apply_overrides, config_error, from_dict, load_yaml, to_dict
from gaperon.data.sft.spec import SFTDataSpec

Precision = Literal["pure_bf16", "mixed_bf16", "fp32"]
LoadMode = Literal["continue", "model_optimizer", "model", "cooldown"]
ScheduleKind = Literal["constant", "cosine", "linear", "wsd"]


@dataclass
class ModelSpec:
    preset: str = "tiny"
    # Any ModelConfig field, e.g. {max_seq_len: 512}. norm_gain_scale defaults from the precision.
    overrides: dict[str, Any] = field(default_factory=dict)
    # "cwt": headless training with Contrastive Weight Tying (no LM head; the readout is tied to the
    # input embeddings). A later run with head "lm" and `init_from` this one adds a fresh LM head.
    head: Literal["lm", "cwt"] = "lm"


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

    @property
    def length(self) -> int:
        """seq_len of a resolved phase (`resolve_recipe` fills it in or the check refuses it)."""
        if self.seq_len is None:
            raise ValueError(f"phase {self.name!r}: seq_len is not resolved")
        return self.seq_len

    @property
    def data_seed(self) -> int:
        """The phase's data seed (0 when neither the recipe nor the mixture file sets one)."""
        return 0 if self.seed is None else self.seed


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
    # Gradient accumulation under FSDP: per_step reduces gradients once per optimizer step (the
    # micro-batches accumulate unsharded, locally: n_micro times less communication, but the full
    # gradient is held until the step); per_micro_batch reduce-scatters after every micro-batch
    # (gradients stay sharded: the memory-lean choice when the unsharded gradient does not fit).
    grad_sync: Literal["per_step", "per_micro_batch"] = "per_step"


@dataclass
class CheckpointSpec:
    every: int = 1000
    keep_last: int = 3


@dataclass
class EvalSpec:
    every: int = 250
    sequences: int = 1000
    batch_size: int = 8
    # Benchmarks (lm-eval task names) scored every `task_every` steps on `task_limit` items; [] = off.
    tasks: list[str] = field(default_factory=list)
    task_every: int = 1000
    task_limit: int | None = 100


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
    # "llama3" (saved into RUN_DIR/tokenizer/; "llama3+bos" for shards tokenized with BOS before each
    # document), null for synthetic token ids, or "init_from": the
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
        if self.model.head == "cwt":
            overrides.update(head="cwt", tie_embeddings=True)
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
    if phase.tokens is None or isinstance(phase.tokens, str):
        raise ValueError(f"phase {phase.name!r}: no resolved token budget")
    per_step = global_batch * phase.length
    return max(1, -(-int(phase.tokens) // per_step))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """YAML file (+ `a.b=value` overrides) -> a resolved, checked Recipe. Raises ConfigError."""
    path = Path(path)
    data = apply_overrides(load_yaml(path), overrides or [])
    return recipe_from_dict(data, source=str(path), base_dir=path.parent)


def recipe_from_dict(data: dict, source: str = "<recipe>", base_dir: Path | str = ".") -> Recipe:
    """Parse, resolve (`resolve_recipe`) and check (`check_recipe`) a recipe mapping."""
    recipe = from_dict(Recipe, dict(data), where=source)  # base_dir and source are internal: refused
    recipe.source, recipe.base_dir = source, Path(base_dir)
    resolved = resolve_recipe(recipe)
    check_recipe(resolved)
    return resolved


# ---- resolution: one place where a phase's values are completed -----------------------------------


def resolve_recipe(r: Recipe) -> Recipe:
    """A copy of `r` with every phase complete: seq_len, seed and the token budget taken from the
    phase's mixture file where the recipe leaves them out (the recipe wins), token budgets as
    numbers. This is what runs and what RUN_DIR/run.yaml records. Idempotent; `r` is unchanged."""
    out = copy.deepcopy(r)
    out.phases = [_resolve_phase(r, i, p) for i, p in enumerate(r.phases)]
    return out


def _resolve_phase(r: Recipe, index: int, p: PhaseSpec) -> PhaseSpec:
    mix = _mixture_defaults(r, p)
    seq_len = p.seq_len if p.seq_len is not None else _int_or_none(mix.get("seq_len"))
    seed = p.seed if p.seed is not None else _int_or_none(mix.get("seed"))
    tokens = p.tokens
    if tokens is None and p.steps is None:
        tokens = mix.get("tokens")
    if isinstance(tokens, str):
        from gaperon.data.mixture import parse_tokens

        tokens = float(parse_tokens(tokens, r.source, f"phases[{index}].tokens"))
    return replace(p, seq_len=seq_len, seed=0 if seed is None else seed, tokens=tokens)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mixture_defaults(r: Recipe, p: PhaseSpec) -> dict:
    """The phase's mixture file as a mapping ({} for inline, synthetic or missing ones; a missing
    file is reported by `check_recipe`)."""
    if isinstance(p.mixture, str) and p.mixture != "synthetic":
        mpath = resolve_path(r, p.mixture)
        if mpath.is_file():
            data = load_yaml(mpath)
            return data if isinstance(data, dict) else {}
    return {}


# ---- checks: pure, on a resolved recipe --------------------------------------------------------


def check_recipe(r: Recipe, world_size: int = 1) -> None:
    """Value checks on a resolved recipe that need no data and no device (nothing is changed);
    `world_size` checks batch divisibility."""
    cfg = _check_model(r)
    _check_batch(r, world_size)
    _check_optimizer(r)
    _check_intervals(r)
    if not r.phases:
        raise _err(r, "phases", "at least one phase is needed")
    if r.init_from is not None and not resolve_path(r, r.init_from).exists():
        raise _err(r, "init_from", f"no such run or checkpoint folder {r.init_from}")
    names: set[str] = set()
    for i, p in enumerate(r.phases):
        if p.name in names:
            raise _err(r, f"phases[{i}].name", f"duplicate phase name {p.name!r}")
        names.add(p.name)
        _check_phase(r, i, p, cfg.max_seq_len)


def check_world_size(r: Recipe, world_size: int) -> None:
    """The one check that needs the process group: the global batch splits over the ranks."""
    _check_batch(r, world_size)


def _err(r: Recipe, fieldname: str, msg: str) -> ConfigError:
    return config_error(r.source, fieldname, msg)


def _check_model(r: Recipe):
    try:
        cfg = r.model_config()
    except KeyError as e:
        raise _err(r, "model.preset", e.args[0]) from None
    except (TypeError, ValueError) as e:
        raise _err(r, "model.overrides", str(e)) from None
    if r.tokenizer not in (None, "llama3", "llama3+bos", "init_from"):
        raise _err(
            r, "tokenizer", f"{r.tokenizer!r} is not one of ['llama3', 'llama3+bos', 'init_from', null]"
        )
    if r.tokenizer == "init_from":
        from gaperon.train.sft_data import init_source_kind

        if r.init_from is None or init_source_kind(resolve_path(r, r.init_from)) == "run":
            raise _err(
                r, "tokenizer", "'init_from' needs `init_from` to name a Hugging Face folder or GGUF file"
            )
    if r.tokenizer in ("llama3", "llama3+bos") and cfg.vocab_size < 128_256:
        raise _err(
            r,
            "tokenizer",
            f"llama3 needs vocab_size >= 128256, preset {r.model.preset!r} has {cfg.vocab_size}",
        )
    return cfg


def _check_batch(r: Recipe, world_size: int) -> None:
    b = r.batch
    for name, value in (("batch.global_batch", b.global_batch), ("batch.micro_batch", b.micro_batch)):
        if value <= 0:
            raise _err(r, name, f"must be > 0, got {value}")
    if b.global_batch % (b.micro_batch * world_size):
        raise _err(
            r,
            "batch.global_batch",
            f"{b.global_batch} is not divisible by micro_batch ({b.micro_batch}) x world size ({world_size})",
        )
    if r.parallel.shard_size is not None and r.parallel.shard_size <= 0:
        raise _err(r, "parallel.shard_size", "must be > 0")


def _check_optimizer(r: Recipe) -> None:
    o = r.optimizer
    if len(o.betas) != 2:
        raise _err(r, "optimizer.betas", "needs exactly two values")
    if not (0 <= o.betas[0] < 1 and 0 <= o.betas[1] < 1):
        raise _err(r, "optimizer.betas", f"must be in [0, 1), got {list(o.betas)}")
    if o.eps <= 0:
        raise _err(r, "optimizer.eps", f"must be > 0, got {o.eps}")
    if o.weight_decay < 0:
        raise _err(r, "optimizer.weight_decay", f"must be >= 0, got {o.weight_decay}")
    if o.grad_clip < 0:
        raise _err(r, "optimizer.grad_clip", f"must be >= 0, got {o.grad_clip}")


def _check_intervals(r: Recipe) -> None:
    for name, value in (
        ("checkpoint.every", r.checkpoint.every),
        ("checkpoint.keep_last", r.checkpoint.keep_last),
        ("eval.every", r.eval.every),
        ("eval.batch_size", r.eval.batch_size),
        ("log.every", r.log.every),
        ("max_nan_skips", r.max_nan_skips),
    ):
        if value <= 0:
            raise _err(r, name, f"must be > 0, got {value}")
    if r.eval.sequences < 0:
        raise _err(r, "eval.sequences", f"must be >= 0, got {r.eval.sequences}")
    if r.eval.tasks and (
        r.eval.task_every <= 0 or (r.eval.task_limit is not None and r.eval.task_limit <= 0)
    ):
        raise _err(r, "eval.task_every", "eval.task_every and eval.task_limit must be > 0")


def _check_phase(r: Recipe, i: int, p: PhaseSpec, max_seq_len: int) -> None:
    where = f"phases[{i}]"
    _check_mixture(r, where, p)
    if p.seq_len is None:
        raise _err(r, f"{where}.seq_len", "missing (give it here or in the mixture file)")
    if p.seq_len <= 0:
        raise _err(r, f"{where}.seq_len", f"must be > 0, got {p.seq_len}")
    if p.seq_len > max_seq_len:
        raise _err(r, f"{where}.seq_len", f"{p.seq_len} exceeds the model's max_seq_len {max_seq_len}")
    if p.steps is None and p.tokens is None:
        raise _err(r, where, "give `tokens` (a budget) or `steps`")
    if p.steps is not None and p.steps <= 0:
        raise _err(r, f"{where}.steps", f"must be > 0, got {p.steps}")
    if isinstance(p.tokens, str):
        raise _err(r, f"{where}.tokens", "not resolved (call resolve_recipe first)")
    if p.tokens is not None and p.tokens <= 0:
        raise _err(r, f"{where}.tokens", f"must be > 0, got {p.tokens}")
    _check_lr(r, where, p.lr)
    if i == 0 and r.init_from is None and p.load not in ("continue", "model_optimizer"):
        raise _err(
            r,
            f"{where}.load",
            f"the first phase starts from scratch; {p.load!r} needs a previous phase or `init_from`",
        )


def _check_mixture(r: Recipe, where: str, p: PhaseSpec) -> None:
    if p.sft is not None:
        if p.mixture is not None:
            raise _err(r, where, "give `mixture` (pretraining) or `sft` (fine-tuning), not both")
        if r.tokenizer is None:
            raise _err(r, "tokenizer", "SFT phases render conversations: give a tokenizer")
        if p.sft.packing and not r.doc_masking:
            raise _err(
                r,
                "doc_masking",
                f"{where}.sft packs examples: set doc_masking: true (else they attend to each other)",
            )
        return
    if not isinstance(p.mixture, str | dict):
        raise _err(r, f"{where}.mixture", "must be a mixture file path, an inline mapping or 'synthetic'")
    if isinstance(p.mixture, str) and p.mixture != "synthetic":
        mpath = resolve_path(r, p.mixture)
        if not mpath.is_file():
            raise _err(r, f"{where}.mixture", f"no such mixture file {mpath}")


def _check_lr(r: Recipe, where: str, lr: LRSpec) -> None:
    if lr.peak <= 0 or lr.min_lr < 0 or lr.min_lr > lr.peak:
        raise _err(
            r, f"{where}.lr", f"need 0 <= min_lr <= peak and peak > 0 (peak={lr.peak}, min_lr={lr.min_lr})"
        )
    if lr.warmup_steps < 0:
        raise _err(r, f"{where}.lr.warmup_steps", "must be >= 0")
    if not 0 < lr.cooldown_fraction <= 1:
        raise _err(r, f"{where}.lr.cooldown_fraction", f"must be in (0, 1], got {lr.cooldown_fraction}")


def resolve_path(r: Recipe, p: str | Path) -> Path:
    """A path from the recipe: absolute, relative to the working folder if it exists there, else
    relative to the recipe file's folder."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    return r.base_dir / p
