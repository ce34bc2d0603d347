"""What a run reports: metrics.jsonl (read by tests and tools), TensorBoard and a console line.

MFU follows ../shared/ANCHORS.md: FLOPs/token = 6 * N_matmul + 12 * layers * dim * seq, with
N_matmul = every matmul weight including the LM head but not the input embedding; it is divided
by the device's peak: 989e12 bf16 FLOP/s for an H100 or H200 (dense), 312e12 for an A100,
`log.peak_flops` from the recipe otherwise (no MFU when unknown, e.g. on CPU).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from gaperon.model.llama import ModelConfig

# Dense bf16 peaks, most specific name first: the PCIe and NVL H100s are clocked lower than SXM.
KNOWN_PEAKS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
}


def matmul_params(cfg: ModelConfig) -> int:
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2
    mlp = 3 * d * cfg.ffn_dim
    return cfg.n_layers * (attn + mlp) + d * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * cfg.dim * seq_len


def device_peak_flops(device: torch.device, configured: float | None) -> float | None:
    if configured:
        return configured
    if device.type == "cuda":
        return peak_for_name(torch.cuda.get_device_name(device))
    return None


def peak_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its CUDA device name (None when unknown)."""
    for key, peak in KNOWN_PEAKS.items():
        if key in name:
            return peak
    return None


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl, skipping a torn last line (a crash mid-write)."""
    out: list[dict] = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop records of steps after the checkpoint: they are about to be redone, and the
    history must read as one uninterrupted run."""
    from gaperon.atomic import write_text

    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLogger:
    """Rank 0 writes; other ranks get a logger that drops everything."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        self._file = None
        if enabled:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
                except ImportError:  # tensorboard is optional at run time
                    self.tb = None

    def log(self, record: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self.tb.add_scalar(f"train/{key}" if not key.startswith("val") else key, value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self.tb is not None:
            self.tb.close()


def progress_line(
    phase_name: str, phase_idx: int, n_phases: int, step: int, total: int, rec: dict, eta_s: float
) -> str:
    width = 20
    filled = int(width * step / max(1, total))
    bar = "█" * filled + "░" * (width - filled)
    parts = [
        f"[{phase_idx + 1}/{n_phases} {phase_name}] {bar} {step}/{total}",
        f"loss {rec['loss']:.4f}" if rec.get("loss") is not None else "loss nan (skipped)",
        f"lr {rec['lr']:.2e}",
        f"gnorm {rec['grad_norm']:.3f}" if rec.get("grad_norm") is not None else "",
        _fmt_rate(rec["tokens_per_s"]),
        f"mfu {100 * rec['mfu']:.1f}%" if rec.get("mfu") is not None else "",
        f"eta {_fmt_time(eta_s)}",
    ]
    return "  ".join(p for p in parts if p)


def _fmt_rate(tps: float) -> str:
    return f"{tps / 1000:.1f}k tok/s" if tps >= 1000 else f"{tps:.0f} tok/s"


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s"


class Console:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stdout, flush=True)
