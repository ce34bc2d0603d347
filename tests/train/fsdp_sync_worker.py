"""Run under torchrun by test_train_grad_sync: train, counting FSDP2's reduce-scatter calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from gaperon.train import train

calls = 0
_real = dist.reduce_scatter_single


def _counting(*args, **kwargs):
    global calls
    calls += 1
    return _real(*args, **kwargs)


# FSDP2's default reduce-scatter looks `dist.reduce_scatter_single` up at each call.
dist.reduce_scatter_single = _counting

if __name__ == "__main__":
    recipe, out, *overrides = sys.argv[1:]
    result = train(recipe, out, overrides)
    Path(out, f"reduce_scatters.{os.environ['RANK']}.json").write_text(json.dumps({"calls": calls}))
    sys.exit(result.exit_code)
