"""The pretraining loop: phases, steps with gradient accumulation, checkpoints, exact resume.

`train(recipe, run_dir)` is the whole job. Re-running it on the same RUN_DIR resumes from the
newest complete checkpoint; since the batch at a step is a pure function of (seed, phase, step)
and every counter, RNG state and optimizer state is checkpointed, a resumed run reproduces the
losses of an uninterrupted one bit for bit (fp32 on CPU, same world size).

Counters: `global_step` (optimizer steps since the run began: names checkpoints and metrics),
`phase_step` (index into the phase's data), `sched_step` (the LR schedule's step, kept only by the
`continue` load mode) and `tokens_seen`. A non-finite loss or gradient norm skips the update (the
step and its batch are still consumed, so a bad batch is not retried forever); `max_nan_skips`
consecutive ones stop the run without writing a checkpoint, so the last good one stays latest.
With `doc_masking`, attention stays within a document and positions restart at each document
(a flex_attention BlockMask on CUDA with compiled blocks, a dense bool mask elsewhere).

GPU step hygiene: one host sync per step (loss and grad norm read together, after clipping is
queued), the next step's rows read and pinned while the GPU still runs this step's backward, and
under FSDP one gradient reduction per optimizer step (on the last micro-batch).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gaperon.atomic import write_json, write_text
from gaperon.errors import EXIT_REQUEUE, CheckpointError, ConfigError, TrainingDiverged
from gaperon.train import checkpoint as ckpt
from gaperon.train.config import (
    Recipe,
    check_recipe,
    check_world_size,
    load_recipe,
    phase_steps,
    resolve_path,
    resolve_recipe,
)
from gaperon.train.data import build_sampler
from gaperon.train.distributed import DistEnv, StopRequest, setup, teardown
from gaperon.train.metrics import (
    Console,
    MetricsLogger,
    device_peak_flops,
    flops_per_token,
    progress_line,
    truncate_metrics,
)
from gaperon.train.optim import build_optimizer, set_lr
from gaperon.train.parallelize import build_mesh, parallelize
from gaperon.train.precision import PrecisionPolicy
from gaperon.train.schedule import phase_lr

# What a run writes at the top of RUN_DIR (besides STOP): what --restart moves aside.
RUN_FILES = ("checkpoints", "metrics.jsonl", "tb", "run.yaml", "model_config.json", "tokenizer")


@dataclass
class TrainState:
    phase_index: int = 0
    phase_step: int = 0
    global_step: int = 0
    sched_step: int = 0
    tokens_seen: int = 0
    last_lr: float = 0.0
    # LR the cooldown phase decays from (the previous phase's last LR).
    phase_start_lr: float = 0.0
    phase_complete: bool = False
    nan_streak: int = 0


@dataclass
class TrainResult:
    status: str  # "complete" or "preempted" (checkpointed on a stop request: run again to resume)
    state: TrainState
    run_dir: Path
    exit_code: int = 0
    val_losses: list[float] = field(default_factory=list)


def enter_phase(state: TrainState, index: int, load: str) -> tuple[TrainState, bool]:
    """Counters after moving into phase `index` with load mode `load`; also whether the optimizer
    starts fresh. Weights are always kept; `model` (transfer) drops the optimizer state."""
    new = TrainState(**asdict(state))
    new.phase_index, new.phase_step, new.phase_complete, new.nan_streak = index, 0, False, 0
    if load != "continue":
        new.sched_step = 0
    new.phase_start_lr = state.last_lr
    return new, load == "model"


def source_head(src: Path) -> str:
    """The head ("lm" or "cwt") of the run a branch starts from (a run dir or a checkpoint in one)."""
    import json

    for run_dir in (Path(src), Path(src).parent.parent):
        cfg = run_dir / "model_config.json"
        if cfg.is_file():
            try:
                return str(json.loads(cfg.read_text(encoding="utf-8")).get("head", "lm"))
            except (OSError, ValueError):
                return "lm"
    return "lm"


def positions_from_docs(doc_ids: Tensor) -> Tensor:
    """Position of each token inside its document (restarts at 0 on every new doc id)."""
    t = doc_ids.shape[-1]
    idx = torch.arange(t, device=doc_ids.device).expand_as(doc_ids)
    change = torch.ones_like(doc_ids, dtype=torch.bool)
    change[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start = torch.where(change, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start


def doc_block_mask(doc_ids: Tensor):
    """The flex_attention BlockMask of `causal_doc_mask(doc_ids)`: a token sees earlier tokens of
    its own document. Built once per micro-batch and shared by every layer."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, t = doc_ids.shape

    def same_doc_causal(bi, _head, q, kv):
        return (doc_ids[bi, q] == doc_ids[bi, kv]) & (q >= kv)

    return create_block_mask(same_doc_causal, b, None, t, t, device=doc_ids.device)


def use_flex_attention(device: torch.device, compiled: bool) -> bool:
    """Document masking through flex_attention only where it is fast and trainable: on CUDA inside
    compiled blocks (eager flex is a slow reference; CPU flex has no backward). Elsewhere a dense
    bool mask (which on a GPU would rule out the flash kernel)."""
    return device.type == "cuda" and compiled


def micro_loss(
    model: nn.Module,
    tokens: Tensor,
    doc_ids: Tensor | None,
    doc_masking: bool,
    flex: bool = False,
    labels: Tensor | None = None,
) -> Tensor:
    """Mean next-token loss of one micro-batch (B, T+1) through the chunked LM-head loss; `labels`
    (B, T) with -100 on untrained tokens replaces the next tokens (SFT)."""
    from gaperon.model.llama import causal_doc_mask

    inputs, labels = tokens[:, :-1], (tokens[:, 1:] if labels is None else labels)
    if doc_masking and doc_ids is not None:
        d = doc_ids[:, :-1]
        mask = doc_block_mask(d) if flex else causal_doc_mask(d)
        return model(inputs, positions=positions_from_docs(d), mask=mask, labels=labels)
    return model(inputs, labels=labels)


class Trainer:
    """Holds the model, optimizer and samplers of one run; `run()` walks the phases."""

    def __init__(self, recipe: Recipe, run_dir: Path, env: DistEnv, restart: bool = False) -> None:
        self.r, self.run_dir, self.env = recipe, Path(run_dir), env
        self.restart = restart  # start over: the run's previous files are moved aside first
        self.policy = PrecisionPolicy.from_name(recipe.precision)
        self.cfg = recipe.model_config()
        self.say = Console(env.is_main)
        self.stop = StopRequest(self.run_dir, check_file=env.is_main)
        self.sharded = recipe.parallel.fsdp != "none"
        self.flex = recipe.doc_masking and use_flex_attention(env.device, recipe.parallel.compile)
        if env.world_size > 1 and not self.sharded:
            raise ConfigError(f"{recipe.source}: parallel.fsdp: several processes need fsdp full or hybrid")
        if recipe.precision != "fp32" and env.device.type == "cpu" and env.is_main:
            self.say(f"note: {recipe.precision} on CPU is slow; fp32 is the CPU test mode")
        if not restart:
            self._check_same_model()
        self.tokenizer = self._tokenizer()
        identity = self.tokenizer.identity() if self.tokenizer is not None else None
        # All samplers first: a missing data folder or bad mixture fails before any work.
        self.samplers = [
            build_sampler(recipe, i, self.cfg.vocab_size, identity, self.tokenizer)
            for i in range(len(recipe.phases))
        ]
        self.steps = [phase_steps(p, recipe.batch.global_batch) for p in recipe.phases]
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, recipe.optimizer, lr=0.0)
        self.peak = device_peak_flops(env.device, recipe.log.peak_flops)
        self.val_cache: dict[int, list] = {}
        self._prefetched: tuple[tuple[int, int], tuple[Tensor, Tensor | None, tuple | None]] | None = None

    # ---- setup -------------------------------------------------------------------------------
    def _check_same_model(self) -> None:
        """A run folder holds one model: resuming it with another shape is a mistake, not a reason
        to skip its checkpoints and start over (which would then prune them)."""
        import json

        path = self.run_dir / "model_config.json"
        if not path.exists():
            return
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        now = {**self.cfg.to_dict(), "precision": self.r.precision}
        diff = sorted(
            k for k in set(before) | set(now) if before.get(k) != json.loads(json.dumps(now.get(k)))
        )
        if diff:
            raise ConfigError(
                f"{self.r.source}: model/precision differ from the run in {self.run_dir} "
                f"({', '.join(diff)}); "
                "train into a new --out folder (to start from this run, set `init_from` to it; "
                "to start this folder over, pass --restart)"
            )

    def _move_aside(self) -> None:
        """--restart: move the previous run's files into RUN_DIR/restarted-<UTC time>/ (never delete)."""
        if self.env.is_main:
            import os

            present = [self.run_dir / n for n in RUN_FILES if (self.run_dir / n).exists()]
            if present:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
                dest = self.run_dir / f"restarted-{stamp}"
                n = 1
                while dest.exists():
                    n += 1
                    dest = self.run_dir / f"restarted-{stamp}-{n}"
                dest.mkdir()
                for path in present:
                    os.replace(path, dest / path.name)
                ckpt.fsync_tree(self.run_dir, files=False)
                names = ", ".join(p.name for p in present)
                self.say(f"restart: moved the previous run's {names} to {dest}; starting over")
        if dist.is_initialized():
            dist.barrier()

    def _tokenizer(self):
        if self.r.tokenizer is None:
            return None
        if self.r.tokenizer == "init_from":
            from gaperon.train.sft_data import imported_tokenizer

            return imported_tokenizer(resolve_path(self.r, self.r.init_from))
        from gaperon.tokenizer import load_tokenizer

        return load_tokenizer(self.r.tokenizer)

    def _build_model(self) -> nn.Module:
        from gaperon.model.presets import build

        mesh = build_mesh(self.r.parallel, self.env.device.type)
        if self.env.device.type == "cuda" and not self.cfg.tie_embeddings:
            # Any size: build on meta, shard, then materialise each rank's shard on the GPU. (Not
            # for tied embeddings: `to_empty` would untie them, and they are small models anyway.)
            model = build(self.cfg, device="meta", dtype=self.policy.param_dtype)
            parallelize(model, self.r.parallel, self.policy, mesh)
            model.to_empty(device=self.env.device)
            torch.manual_seed(self.r.seed)
            model.init_weights()
        else:
            # CPU: initialise the full model identically on every rank, then shard it.
            torch.manual_seed(self.r.seed)
            model = build(self.cfg, device="cpu")
            model.init_weights(seed=self.r.seed)
            model = model.to(self.env.device, self.policy.param_dtype)  # `.to` keeps tied weights tied
            parallelize(model, self.r.parallel, self.policy, mesh)
        return model

    def _write_run_files(self) -> None:
        """run.yaml (the resolved recipe: what actually runs), model_config.json and the tokenizer
        (what `load_run_model` needs)."""
        if not self.env.is_main:
            return
        import yaml

        self.run_dir.mkdir(parents=True, exist_ok=True)
        old = self.run_dir / "run.yaml"
        text = yaml.safe_dump(self.r.to_yaml_dict(), sort_keys=False)
        if old.exists():
            try:
                changed = yaml.safe_load(old.read_text(encoding="utf-8")) != yaml.safe_load(text)
            except (OSError, yaml.YAMLError):
                changed = True
            if changed:
                self.say(
                    f"warning: the recipe differs from the one {self.run_dir} ran with (run.yaml); "
                    "continuing with the new values"
                )
        write_text(old, text)
        write_json(self.run_dir / "model_config.json", {**self.cfg.to_dict(), "precision": self.r.precision})
        if self.tokenizer is not None and not (self.run_dir / "tokenizer").exists():
            from gaperon.atomic import atomic_path

            with atomic_path(self.run_dir / "tokenizer") as tmp:
                tmp.mkdir()
                self.tokenizer.save(tmp)

    # ---- steps -------------------------------------------------------------------------------
    def _lr(self, state: TrainState) -> float:
        phase = self.r.phases[state.phase_index]
        after_something = state.phase_index > 0 or self.r.init_from is not None
        decays_from = state.phase_start_lr if after_something else None
        return phase_lr(phase, decays_from, state.sched_step, state.phase_step, self.steps[state.phase_index])

    def _all_mean(self, value: Tensor) -> Tensor:
        if dist.is_initialized():
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.env.world_size
        return value

    def _device_batch(self, phase_index: int, phase_step: int) -> tuple[Tensor, Tensor | None, tuple | None]:
        """This rank's (tokens, doc_ids, sft) of a step on the device, from the one-step prefetch when
        it holds that step. On CUDA the host rows are pinned so the copy is truly asynchronous.
        `sft` is None, or (labels, loss weight of each micro-batch, trained tokens of the global batch)."""
        key = (phase_index, phase_step)
        if self._prefetched is not None and self._prefetched[0] == key:
            out = self._prefetched[1]
            self._prefetched = None
            return out
        batch = self.samplers[phase_index].batch(phase_step, self.env.rank, self.env.world_size)
        pin = self.env.device.type == "cuda"
        tokens = batch.tokens.pin_memory() if pin else batch.tokens
        doc_ids = None
        if self.r.doc_masking:
            doc_ids = batch.doc_ids.pin_memory() if pin else batch.doc_ids
            doc_ids = doc_ids.to(self.env.device, non_blocking=True)
        sft = None
        if getattr(batch, "labels", None) is not None:
            from gaperon.train.sft_data import micro_weights

            w = micro_weights(
                batch.labels, self.r.batch.micro_batch, self.env.world_size, batch.global_trained
            )
            sft = (batch.labels.to(self.env.device, non_blocking=True), w, batch.global_trained)
        return tokens.to(self.env.device, non_blocking=True), doc_ids, sft

    def _prefetch(self, phase_index: int, phase_step: int) -> None:
        """Read the next step's rows while the GPU still works on this step's kernels (the batch at
        a step is a pure function of (seed, phase, step), so reading it early changes nothing)."""
        if phase_step < self.steps[phase_index]:
            self._prefetched = ((phase_index, phase_step), self._device_batch(phase_index, phase_step))

    def _set_grad_sync(self, last_micro: bool) -> None:
        """Under FSDP2, reduce gradients on the last micro-batch only (`parallel.grad_sync:
        per_step`): earlier ones accumulate into the local unsharded gradient. In pure bf16 that
        accumulation is in bf16, like the per-micro-batch path (which adds reduce-scattered bf16
        shards): the optimizer sees bf16 gradients either way, and one reduction instead of n_micro
        rounds less. In mixed bf16 FSDP2 accumulates in the fp32 reduce dtype. `per_micro_batch`
        reduce-scatters every micro-batch and, under hybrid sharding, all-reduces across replicas
        on the last one only."""
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(self.model, FSDPModule):
            return
        if self.r.parallel.grad_sync == "per_step":
            self.model.set_requires_gradient_sync(last_micro)
        elif self.r.parallel.fsdp == "hybrid":
            self.model.set_requires_all_reduce(last_micro)

    def train_step(self, state: TrainState) -> dict:
        r, env = self.r, self.env
        lr = self._lr(state)
        set_lr(self.optimizer, lr)
        tokens, doc_ids, sft = self._device_batch(state.phase_index, state.phase_step)
        mb = r.batch.micro_batch
        n_micro = tokens.shape[0] // mb
        self.model.train()
        total = torch.zeros((), device=env.device, dtype=torch.float32)
        for m in range(n_micro):
            sl = slice(m * mb, (m + 1) * mb)
            self._set_grad_sync(m == n_micro - 1)
            with self.policy.autocast(env.device.type, self.sharded):
                loss = micro_loss(
                    self.model,
                    tokens[sl],
                    doc_ids[sl] if doc_ids is not None else None,
                    r.doc_masking,
                    self.flex,
                    sft[0][sl] if sft is not None else None,
                )
            if sft is None:
                (loss / n_micro).backward()
                total += loss.detach().float()
            else:  # SFT: sum over trained tokens / trained tokens of the global batch
                (loss * sft[1][m]).backward()
                total += loss.detach().float() * sft[1][m]
        self._prefetch(state.phase_index, state.phase_step + 1)  # host work overlaps the GPU's
        loss_t = self._all_mean(total / n_micro if sft is None else total)
        clip = r.optimizer.grad_clip if r.optimizer.grad_clip > 0 else float("inf")
        gnorm_t = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        if hasattr(gnorm_t, "full_tensor"):  # a DTensor under FSDP2
            gnorm_t = gnorm_t.full_tensor()
        # The one host sync of the step: the skip decision needs both numbers on the host.
        loss, gnorm = torch.stack([loss_t.float(), gnorm_t.detach().float().to(loss_t.device)]).tolist()
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        if finite:
            self.optimizer.step()
            state.nan_streak = 0
        else:
            state.nan_streak += 1
        self.optimizer.zero_grad(set_to_none=True)
        step_tokens = r.batch.global_batch * r.phases[state.phase_index].length
        state.phase_step += 1
        state.global_step += 1
        state.sched_step += 1
        state.tokens_seen += step_tokens
        state.last_lr = lr
        return {
            "step": state.global_step,
            "phase": r.phases[state.phase_index].name,
            "phase_step": state.phase_step,
            "loss": loss if finite else None,
            "lr": lr,
            "grad_norm": gnorm if finite else None,
            "tokens": state.tokens_seen,
            "skipped": not finite,
            **({"trained_tokens": sft[2]} if sft is not None else {}),
        }

    @torch.no_grad()
    def validate(self, index: int) -> float | None:
        """Mean loss over the phase's held-out sequences; ranks split the batches (padded with
        weight-0 repeats so every rank runs the same number of forwards, as FSDP requires)."""
        if self.r.eval.sequences <= 0:
            return None
        if index not in self.val_cache:
            # Kept on the device (1000 x 4097 tokens is 33 MB): no copies at each evaluation.
            dev, docs = self.env.device, self.r.doc_masking
            self.val_cache[index] = [
                (b.tokens.to(dev), b.doc_ids.to(dev) if docs else None)
                for b in self.samplers[index].validation_batches(
                    self.r.eval.sequences, self.r.eval.batch_size
                )
            ]
        batches = self.val_cache[index]
        if not batches:
            return None
        env = self.env
        self.model.eval()
        # Losses summed on the device, token counts on the host: no host sync per batch.
        loss_sum = torch.zeros((), device=env.device, dtype=torch.float64)
        count = 0
        per_rank = -(-len(batches) // env.world_size)
        for j in range(per_rank):
            i = j * env.world_size + env.rank
            real = i < len(batches)
            toks, docs = batches[i if real else 0]
            with self.policy.autocast(env.device.type, self.sharded):
                loss = micro_loss(self.model, toks, docs, self.r.doc_masking, self.flex).double()
            n = toks[:, 1:].numel()
            if real:
                loss_sum += loss * n
                count += n
        sums = torch.stack([loss_sum, torch.tensor(float(count), dtype=torch.float64).to(env.device)])
        if dist.is_initialized():
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        self.model.train()
        return float(sums[0] / sums[1])

    # ---- checkpoints -------------------------------------------------------------------------
    def _benchmarks(self, state: TrainState, logger: MetricsLogger) -> None:
        """Recipe `eval.tasks`: a few benchmark items scored, logged as eval/<task>/<metric>."""
        tok = self._tokenizer()
        if tok is None:
            self.say("eval.tasks needs the recipe's tokenizer; skipped")
            return
        from gaperon.evaluate.in_training import evaluate_during_training

        scores = evaluate_during_training(self.model, tok, self.r.eval.tasks, self.r.eval.task_limit)
        logger.log({"step": state.global_step, **scores})
        self.say(f"step {state.global_step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))

    def save(self, state: TrainState) -> Path:
        meta = {
            "state": asdict(state),
            "phase_name": self.r.phases[state.phase_index].name,
            "sampler": self._sampler_state(state),
            "rng": ckpt.rng_state(),
            "recipe_digest": self.r.digest(),
            "world_size": self.env.world_size,
            "precision": self.r.precision,
        }
        path = ckpt.save(
            self.run_dir, state.global_step, self.model, self.optimizer, meta, self.r.checkpoint.keep_last
        )
        self.say(
            f"checkpoint {path} (step {state.global_step}, "
            f"phase {meta['phase_name']} step {state.phase_step})"
        )
        return path

    def _sampler_state(self, state: TrainState) -> dict:
        """The sampler's state at the checkpoint's step (the prefetch may have read one step ahead)."""
        sd = dict(self.samplers[state.phase_index].state_dict())
        if "step" in sd:
            sd["step"] = state.phase_step
        return sd

    def restore(self) -> TrainState | None:
        loaded = ckpt.load_latest(self.run_dir, self.model, self.optimizer, log=self.say)
        if loaded is None:
            return None
        fields = set(TrainState.__dataclass_fields__)
        state = TrainState(**{k: v for k, v in loaded.meta["state"].items() if k in fields})
        if state.phase_index >= len(self.r.phases):
            raise ConfigError(
                f"{self.r.source}: phases: the checkpoint {loaded.path} is in phase "
                f"{state.phase_index} but the recipe has {len(self.r.phases)}"
            )
        try:
            self.samplers[state.phase_index].load_state_dict(loaded.meta.get("sampler", {}))
        except ValueError as e:
            raise ConfigError(f"{self.r.source}: resuming {loaded.path}: {e}") from None
        if "rng" in loaded.meta:
            ckpt.set_rng_state(loaded.meta["rng"])
        if loaded.meta.get("recipe_digest") != self.r.digest():
            self.say("warning: resuming a checkpoint written under a different recipe")
        total = sum(self.steps)
        self.say(
            f"resuming at step {state.global_step} of {total}: {state.global_step} steps done, "
            f"{total - state.global_step} to go (from {loaded.path}, phase "
            f"{self.r.phases[state.phase_index].name} step {state.phase_step})"
        )
        return state

    def branch(self) -> TrainState:
        """Start this run from another run's checkpoint with the first phase's load mode: the
        weights always; the optimizer unless `model`; the schedule step only with `continue`.
        Step and token counters start at 0 (this is a new run)."""
        if self.r.init_from is None:
            raise ValueError("branch() needs init_from")
        src = resolve_path(self.r, self.r.init_from)
        mode = self.r.phases[0].load
        from gaperon.train.sft_data import init_source_kind, load_imported_weights

        if init_source_kind(src) in ("hf", "gguf"):  # weights only: a new run from an imported model
            load_imported_weights(self.model, src, self.sharded)
            self.say(f"starting from the weights of {src}")
            return TrainState()
        # Headless (CWT) source, LM-head target: the conversion phase. The head is new, so the
        # optimizer state (of a different parameter set) starts fresh whatever the load mode.
        adding_head = source_head(src) == "cwt" and self.cfg.head == "lm"
        keep_optimizer = mode != "model" and not adding_head
        try:
            loaded = ckpt.load_from(src, self.model, self.optimizer if keep_optimizer else None, log=self.say)
        except CheckpointError as e:
            raise ConfigError(f"{self.r.source}: init_from: {e}") from None
        before = loaded.meta.get("state", {})
        prev = TrainState(
            phase_index=-1,
            sched_step=int(before.get("sched_step", 0)),
            last_lr=float(before.get("last_lr", 0.0)),
            phase_complete=True,
        )
        state, _ = enter_phase(prev, 0, mode)
        if adding_head:
            self._fresh_lm_head()
        self.say(
            f"branching from {loaded.path} (load mode {mode}"
            f"{'; headless source: a fresh LM head is added and trained' if adding_head else ''})"
        )
        return state

    @torch.no_grad()
    def _fresh_lm_head(self) -> None:
        """A new LM head at the model's init scale, on top of a headless body."""
        torch.manual_seed(self.r.seed)
        std = self.cfg.init_std
        head = cast(nn.Linear, self.model.get_submodule("lm_head"))
        torch.nn.init.trunc_normal_(head.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    # ---- the run -----------------------------------------------------------------------------
    def start_state(self) -> TrainState:
        """Where the run starts: its latest checkpoint, else `init_from`, else step 0. Touches no
        file of the run folder, so a failed resume (CheckpointError) leaves it as it was."""
        if self.restart:
            self._move_aside()
        state = None if self.restart else self.restore()
        if state is None and self.r.init_from is not None:
            state = self.branch()
        if state is None:
            state = TrainState()
            self.say(
                f"starting {self.run_dir} from scratch: {self.cfg.n_layers} layers, dim {self.cfg.dim}, "
                f"{sum(self.steps)} steps over {len(self.r.phases)} phase(s), {self.env.world_size} "
                f"process(es), {self.r.precision} on {self.env.device.type}"
            )
        return state

    def run(self) -> TrainResult:
        r, env = self.r, self.env
        state = self.start_state()
        self._write_run_files()
        if env.is_main and self.stop.stop_file.exists():
            self.stop.stop_file.unlink()  # a stale request from the previous job
        if env.is_main:
            truncate_metrics(self.run_dir / "metrics.jsonl", state.global_step)
        if dist.is_initialized():
            dist.barrier()
        logger = MetricsLogger(self.run_dir, env.is_main, r.log.tensorboard)
        self.stop.install()
        vals: list[float] = []
        try:
            start = state.phase_index + (1 if state.phase_complete else 0)
            for index in range(start, len(r.phases)):
                if index != state.phase_index:
                    mode = r.phases[index].load
                    state, fresh_optim = enter_phase(state, index, mode)
                    if fresh_optim:
                        self.optimizer = build_optimizer(self.model, r.optimizer, lr=0.0)
                    self.say(f"phase {index + 1}/{len(r.phases)} {r.phases[index].name}: load mode {mode}")
                stopped = self._run_phase(state, logger, vals)
                if stopped:
                    return TrainResult("preempted", state, self.run_dir, EXIT_REQUEUE, vals)
            self.say(f"done: {state.global_step} steps, {state.tokens_seen:,} tokens")
            return TrainResult("complete", state, self.run_dir, 0, vals)
        finally:
            self.stop.uninstall()
            logger.close()

    def _run_phase(self, state: TrainState, logger: MetricsLogger, vals: list[float]) -> bool:
        r, index = self.r, state.phase_index
        n = self.steps[index]
        phase = r.phases[index]
        fpt = flops_per_token(self.cfg, phase.length)
        t_last, tok_last = time.perf_counter(), state.tokens_seen
        t_phase, step_phase0 = time.perf_counter(), state.phase_step
        while state.phase_step < n:
            rec = self.train_step(state)
            if rec["skipped"]:
                self.say(
                    f"step {state.global_step}: non-finite loss or gradient, update skipped "
                    f"({state.nan_streak}/{r.max_nan_skips} in a row)"
                )
                if state.nan_streak >= r.max_nan_skips:
                    logger.log(rec)
                    raise TrainingDiverged(
                        f"{state.nan_streak} consecutive non-finite steps (last at step "
                        f"{state.global_step}); stopped without checkpointing: the last good checkpoint "
                        f"in {ckpt.checkpoint_dir(self.run_dir)} is intact (lower the LR or check the "
                        "data, then run again)"
                    )
            phase_end = state.phase_step == n
            if state.global_step % r.log.every == 0 or phase_end or rec["skipped"]:
                now = time.perf_counter()
                tps = (state.tokens_seen - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, state.tokens_seen
                rec["tokens_per_s"] = tps
                rec["tokens_per_s_per_gpu"] = tps / self.env.world_size
                # MFU per device: each device's share of the tokens at the ANCHORS FLOPs/token.
                rec["mfu"] = tps / self.env.world_size * fpt / self.peak if self.peak else None
                logger.log(rec)
                done = state.phase_step - step_phase0
                eta = (now - t_phase) / max(done, 1) * (n - state.phase_step)
                self.say(progress_line(phase.name, index, len(r.phases), state.phase_step, n, rec, eta))
            t_aside = time.perf_counter()  # validation and checkpoints do not count in tokens/s
            if state.global_step % r.eval.every == 0 or phase_end:
                v = self.validate(index)
                if v is not None:
                    vals.append(v)
                    logger.log({"step": state.global_step, "phase": phase.name, "val_loss": v})
                    self.say(
                        f"[{index + 1}/{len(r.phases)} {phase.name}] step {state.global_step}: "
                        f"val loss {v:.4f}"
                    )
            if r.eval.tasks and state.global_step % r.eval.task_every == 0:
                self._benchmarks(state, logger)
            stop = self.stop.requested(self.env.device)
            if phase_end:
                state.phase_complete = True
            if state.global_step % r.checkpoint.every == 0 or phase_end or stop:
                self.save(state)
            t_last += time.perf_counter() - t_aside
            if stop:
                self.say(
                    f"stop requested: checkpointed at step {state.global_step}; exiting with code "
                    f"{EXIT_REQUEUE} so the job can be requeued (run the same command to resume)"
                )
                return True
        return False


def train(
    recipe: str | Path | Recipe,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    restart: bool = False,
) -> TrainResult:
    """Train (or resume) the recipe into `run_dir`. Works alone or under torchrun. `restart` starts
    over even when `run_dir` holds checkpoints (moving its files aside into a dated folder)."""
    if isinstance(recipe, Recipe):
        r = resolve_recipe(recipe)
        check_recipe(r)
    else:
        r = load_recipe(recipe, overrides)  # resolved and checked
    env = setup(r.device, need_group=r.parallel.fsdp != "none")
    try:
        check_world_size(r, env.world_size)
        trainer = Trainer(r, Path(run_dir), env, restart=restart)
        result = trainer.run()
        if env.world_size > 1:
            # Tear down together: a rank closing its connections while a peer still finishes its
            # last collective can abort that peer at exit (seen with gloo). Not on the error path,
            # where a barrier would hang the ranks that did not fail.
            dist.barrier()
        return result
    finally:
        teardown(env)
