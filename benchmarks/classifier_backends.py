"""Test macro-F1 of the n-gram and embedding backends (several heads) on one split, in one run.

The offline labelled set (`gaperon classifier labels`, seed 0) and the same stratified training
subset (`max_train`, 360 by default) for every model; the embeddings are computed once and shared
by the embedding heads. Prints one table (all / French / English test macro-F1) and writes
OUT/backends.json. Quality, not speed: fit times are printed for information only.
Usage: python benchmarks/classifier_backends.py [--out /tmp/cls_backends] [--max-train 360]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
L2_GRID = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]


def variants() -> dict[str, dict]:
    ngram = yaml.safe_load((REPO / "recipes/classifier/ngram.yaml").read_text())
    emb = yaml.safe_load((REPO / "recipes/classifier/embedding.yaml").read_text())
    mlp = {**emb["options"], "hidden": 256, "l2_grid": None, "ngram_buckets": 0}
    lin = {"hidden": 0, "epochs": 400, "lr": 3e-3, "max_tokens": 512}
    return {
        "ngram (recipe)": {"backend": "ngram", "options": ngram["options"]},
        "embedding: MLP 256 (previous default)": {"backend": "embedding", "options": mlp},
        "embedding: logistic, L2 tuned on validation": {
            "backend": "embedding",
            "options": {**lin, "l2_grid": L2_GRID},
        },
        "embedding + n-grams: logistic, L2 tuned": {
            "backend": "embedding",
            "options": {**lin, "l2_grid": L2_GRID, "ngram_buckets": 1 << 16},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/cls_backends")
    ap.add_argument("--max-train", type=int, default=360)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from gaperon.curate.classifier.labels import build_labels
    from gaperon.curate.classifier.train import TrainConfig, train

    out = Path(args.out)
    data = out / "labels"
    if not (data / "train.jsonl").is_file():
        samples = REPO / "data" / "samples"
        build_labels(
            {"fr": [samples / "fr.jsonl.zst"], "en": [samples / "en.jsonl.zst"]}, data, seed=args.seed
        )
    rows = {}
    for i, (name, v) in enumerate(variants().items()):
        cfg = TrainConfig(
            backend=v["backend"], seed=args.seed, max_train=args.max_train, options=v["options"]
        )
        r = train([data], out / f"model{i}", cfg)
        t = r["test"]
        rows[name] = {
            "all": t["all"]["macro_f1"],
            "fr": t["fr"]["macro_f1"],
            "en": t["en"]["macro_f1"],
            "test_n": t["all"]["n"] if "n" in t["all"] else None,
            "fit_seconds": r["fit_seconds"],
            "fit_log": r["fit_log"],
        }
        print(
            f"{name}: test macro-F1 all {t['all']['macro_f1']:.3f} fr {t['fr']['macro_f1']:.3f} "
            f"en {t['en']['macro_f1']:.3f} (fit {r['fit_seconds']} s)",
            flush=True,
        )
    print("\n| model | test macro-F1 all | French | English |\n|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['all']:.3f} | {r['fr']:.3f} | {r['en']:.3f} |")
    (out / "backends.json").write_text(json.dumps({"max_train": args.max_train, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
