"""Where a phase's batches come from: the real mixture sampler, or a synthetic one.

Both answer `batch(step, rank, world_size)` with this rank's rows of the global batch at `step`,
a pure function of (seed, phase, step): that is what makes resume exact and independent of the
number of ranks. The synthetic source (`mixture: synthetic`) needs no files; tests and
benchmarks use it. Its tokens follow a fixed random bigram table with 10% noise, so a model can
learn it and losses fall.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaperon.config import ConfigError, config_error, load_yaml
from gaperon.train.config import PhaseSpec, Recipe, phase_steps, resolve_path


@dataclass
class SyntheticBatch:
    tokens: Tensor  # (rows, seq_len + 1) int64
    doc_ids: Tensor  # same shape, int32
    source_ids: Tensor  # (rows,) int32


class SyntheticSampler:
    """Deterministic learnable token stream; documents of 16-48 tokens."""

    def __init__(self, vocab_size: int, seq_len: int, global_batch: int, seed: int, total_steps: int) -> None:
        self.vocab_size, self.seq_len, self.global_batch = vocab_size, seq_len, global_batch
        self.seed, self.total_steps = seed, total_steps
        gen = torch.Generator().manual_seed(1234)  # the "language": fixed across phases and seeds
        self.table = torch.randint(0, vocab_size, (vocab_size,), generator=gen)

    def _rows(self, key: int, n: int) -> SyntheticBatch:
        gen = torch.Generator().manual_seed(key)
        t = self.seq_len + 1
        noise = torch.randint(0, self.vocab_size, (n, t), generator=gen)
        keep = torch.rand(n, t, generator=gen) < 0.9
        toks = torch.empty(n, t, dtype=torch.long)
        toks[:, 0] = noise[:, 0]
        for i in range(1, t):
            toks[:, i] = torch.where(keep[:, i], self.table[toks[:, i - 1]], noise[:, i])
        lengths = torch.randint(16, 49, (n, t // 16 + 1), generator=gen)
        starts = torch.zeros(n, t, dtype=torch.int32)
        for r in range(n):
            pos = lengths[r].cumsum(0)
            pos = pos[pos < t]
            starts[r, pos] = 1
        doc_ids = starts.cumsum(1, dtype=torch.int32)
        return SyntheticBatch(toks, doc_ids, torch.zeros(n, dtype=torch.int32))

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> SyntheticBatch:
        full = self._rows(self.seed * 1_000_003 + step, self.global_batch)
        per = self.global_batch // world_size
        sl = slice(rank * per, (rank + 1) * per)
        return SyntheticBatch(full.tokens[sl], full.doc_ids[sl], full.source_ids[sl])

    def validation_batches(self, n_sequences: int, batch_size: int) -> list[SyntheticBatch]:
        out = []
        for i, start in enumerate(range(0, n_sequences, batch_size)):
            out.append(self._rows(-(i + 1) - self.seed * 7919, min(batch_size, n_sequences - start)))
        return out

    def state_dict(self) -> dict:
        return {"kind": "synthetic", "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        del state  # stateless: the batch at a step is a function of (seed, step) alone


def mixture_dict(recipe: Recipe, phase: PhaseSpec, index: int) -> dict:
    """The phase definition handed to `gaperon.data.mixture.load_phase`: the mixture's sources,
    with this recipe phase's name, seq_len, token budget and seed."""
    where = f"phases[{index}].mixture"
    if isinstance(phase.mixture, str):
        path = resolve_path(recipe, phase.mixture)
        data = load_yaml(path)
        base = path.parent
    elif isinstance(phase.mixture, dict):
        data, base = dict(phase.mixture), recipe.base_dir
    else:
        raise config_error(recipe.source, where, "must be a file path, a mapping or 'synthetic'")
    if "sources" not in data:
        raise config_error(recipe.source, where, "no `sources` list")
    sources = []
    for s in data["sources"]:
        s = dict(s) if isinstance(s, dict) else s
        if isinstance(s, dict) and "path" in s:
            p = resolve_path(recipe, s["path"])
            if not p.exists() and (base / s["path"]).exists():
                p = base / s["path"]
            s["path"] = str(p)
        sources.append(s)
    out = {k: v for k, v in data.items() if k not in ("sources",)}
    out.update(sources=sources, name=phase.name, seq_len=phase.length, seed=phase.data_seed)
    out["tokens"] = phase_steps(phase, recipe.batch.global_batch) * recipe.batch.global_batch * phase.length
    return out


def build_sampler(
    recipe: Recipe, index: int, vocab_size: int, tokenizer_identity: Any = None, tokenizer: Any = None
):
    """The sampler of phase `index` (ConfigError for a bad mixture or missing data)."""
    phase = recipe.phases[index]
    if phase.sft is not None:
        from gaperon.train.sft_data import build_phase_sampler

        return build_phase_sampler(recipe, index, tokenizer)
    gb = recipe.batch.global_batch
    steps = phase_steps(phase, gb)
    if phase.mixture == "synthetic":
        return SyntheticSampler(vocab_size, phase.length, gb, phase.data_seed, steps)
    data = mixture_dict(recipe, phase, index)
    where = f"phases[{index}].mixture"
    for i, s in enumerate(data["sources"]):
        if isinstance(s, dict) and "path" in s and not Path(s["path"]).exists():
            raise config_error(
                recipe.source,
                f"{where}.sources[{i}].path",
                f"no such data folder {s['path']} "
                f"(make it with: gaperon tokenize INPUT... --out {s['path']})",
            )
    from gaperon.data.mixture import load_phase
    from gaperon.data.sampler import MixtureSampler

    try:
        spec = load_phase(data, where=recipe.source, path=where)
        sampler = MixtureSampler(spec, global_batch=gb, tokenizer_identity=tokenizer_identity)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, ConfigError):
            raise
        raise config_error(recipe.source, where, str(e)) from None
    if tokenizer is not None:
        _check_bos(sampler.bos_id, tokenizer, phase.name)
    return sampler


def _check_bos(data_bos: Any, tokenizer: Any, phase: str) -> None:
    """The shards start documents with BOS exactly when the run's tokenizer says documents do: a
    model trained otherwise sees prompts at generation and evaluation that it never saw in training."""
    from gaperon.errors import DataError

    want = tokenizer.bos_id if getattr(tokenizer, "add_bos", False) else None
    if data_bos != want:
        has = "no BOS" if data_bos is None else f"BOS {data_bos}"
        adds = "adds none" if want is None else f"adds BOS {want}"
        raise DataError(
            f"phase {phase!r}: the data starts documents with {has} but the run's tokenizer {adds}: "
            "retokenize the sources with this run's tokenizer (gaperon tokenize --tokenizer ...)"
        )
