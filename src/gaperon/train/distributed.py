"""Process-group setup for one process or `torchrun` (env:// init), and the stop signals.

SLURM's walltime warning reaches the trainer either as a signal (SIGTERM/SIGUSR1 to a plain
process) or as a STOP file in the run folder (what `scripts/slurm/train.sbatch` touches, because
torchrun's agent would die on SIGUSR1 instead of forwarding it); a user's Ctrl-C is the same
request. The handler only sets a flag; the loop checkpoints at the next step boundary and exits
with EXIT_REQUEUE. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from gaperon.errors import ConfigError


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str = "auto", need_group: bool = False) -> DistEnv:
    """Join torchrun's process group (env://); `need_group` (FSDP) makes a 1-process group when
    launched without torchrun, so `gaperon train` works the same on one GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError(
            "device: cuda was asked for but no CUDA device is available (use device: auto or cpu)"
        )
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns = False
    backend = "nccl" if use_cuda else "gloo"
    # device_id binds the NCCL communicator to this rank's GPU at init (eager init): barriers and
    # object collectives (DCP's planning) then never guess a device, and a bad GPU fails here.
    device_id = device if use_cuda else None
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", device_id=device_id)
        owns = True
    elif need_group and not dist.is_initialized():
        store = dist.HashStore()
        dist.init_process_group(backend=backend, store=store, rank=0, world_size=1, device_id=device_id)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world, local_rank, device, owns)


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class StopRequest:
    """Set by SIGTERM/SIGUSR1, a STOP file or a first Ctrl-C (SIGINT); polled, and agreed on by all
    ranks, once per step. A second Ctrl-C aborts at once (KeyboardInterrupt, exit 130)."""

    def __init__(self, run_dir: Path, check_file: bool = True) -> None:
        self.flag = False
        self.interrupts = 0  # Ctrl-C presses seen
        self.check_file = check_file  # rank 0 only: one stat per step on a shared filesystem
        self.stop_file = Path(run_dir) / "STOP"
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # started with Ctrl-C ignored (nohup, a background job): keep it so
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. a test harness): signals stay as they were
                pass

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handler(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt
            # os.write, not print: a handler may run while print holds the stdout buffer.
            os.write(
                sys.stderr.fileno(),
                b"\nCtrl-C: checkpointing at the end of this step, then exiting (Ctrl-C again aborts now, "
                b"losing the steps since the last checkpoint)\n",
            )
        self.flag = True

    def requested(self, device: torch.device) -> bool:
        local = self.flag or (self.check_file and self.stop_file.exists())
        if not dist.is_initialized():
            return local
        t = torch.tensor([1.0 if local else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
