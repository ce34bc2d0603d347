"""Activation checkpointing, torch.compile and FSDP2, applied to a model from the outside.

As in torchtitan, the model file knows nothing of these: each transformer block is wrapped
(checkpointing), compiled and sharded on its own, then the root (embeddings, final norm, LM head)
is sharded. Parameter names change under the wrappers (`_checkpoint_wrapped_module.`,
`_orig_mod.`); `torch.distributed.checkpoint.state_dict` strips them, so checkpoints always hold
the plain model names.
"""

from __future__ import annotations

import os
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from gaperon.errors import ConfigError
from gaperon.train.config import ParallelSpec
from gaperon.train.precision import PrecisionPolicy


def build_mesh(spec: ParallelSpec, device_type: str):
    """None for unsharded runs; a 1-D mesh (shard) for full; a 2-D (replicate, shard) for hybrid."""
    if spec.fsdp == "none":
        return None
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size() if dist.is_initialized() else 1
    if not dist.is_initialized():
        raise RuntimeError("FSDP needs a process group; launch with torchrun (or set parallel.fsdp=none)")
    if spec.fsdp == "full":
        return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
    shard = spec.shard_size or int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % shard:
        raise ConfigError(f"parallel.shard_size: {shard} does not divide the world size {world}")
    return init_device_mesh(device_type, (world // shard, shard), mesh_dim_names=("replicate", "shard"))


# Per-block compile: all blocks share one code object, so one graph serves every layer; each
# distinct (batch, seq_len, grad mode) gets its own static graph (train and eval, per phase).
_RECOMPILE_LIMIT = 32


def compile_block(block: nn.Module) -> nn.Module:
    """fullgraph: a graph break inside a block would silently cost performance, so fail instead;
    dynamic=False: a new eval batch size or phase seq_len compiles a static graph rather than
    turning the training graph dynamic for the rest of the run."""
    import torch._dynamo.config as dcfg

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name) and getattr(dcfg, name) < _RECOMPILE_LIMIT:
            setattr(dcfg, name, _RECOMPILE_LIMIT)
    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    return cast(nn.Module, compiled)  # an OptimizedModule


def parallelize(model: nn.Module, spec: ParallelSpec, policy: PrecisionPolicy, mesh=None) -> nn.Module:
    """Apply AC, compile and FSDP2 in that order (the order torchtitan uses). Returns the model.

    `spec.reshard_after_forward` False keeps each block's parameters gathered from forward to
    backward (ZeRO-2 like: one all-gather per block and micro-batch instead of two, at the cost of
    holding the full parameters): worth it when the model fits, e.g. gaperon-1b on 8 GPUs."""
    blocks = cast(nn.ModuleDict, model.layers)
    for name, block in list(blocks.items()):
        if spec.activation_checkpointing:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if spec.compile:
            block = compile_block(block)
        blocks[name] = block
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard

        mp = policy.fsdp_mp_policy()
        n = len(blocks)
        for i, block in enumerate(blocks.values()):
            # The last block is resharded by the root right away: keep it gathered (saves one all-gather).
            reshard = spec.reshard_after_forward and i < n - 1
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, mp_policy=mp)
    return model
