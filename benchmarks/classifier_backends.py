"""Test macro-F1 of the n-gram and embedding backends (several features and heads) on one split, in one run.

The offline labelled set (`gaperon classifier labels`, seed 0, 200 documents per label and
language) and the same training documents (the whole training split by default; `--max-train N`
a stratified subset) for every model; each model's choices (epoch, L2, head width) are made on the
validation split, the test split is only scored. The embeddings are computed once and shared by
the embedding heads. Prints one table (all / French / English test macro-F1) and writes
OUT/backends.json. Quality, not speed: fit times are printed for information only.
Usage: python benchmarks/classifier_backends.py [--out /tmp/cls_backends] [--max-train N] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OLD_L2_GRID = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]  # the previous embedding.yaml's


def variants() -> dict[str, dict]:
    ngram = yaml.safe_load((REPO / "recipes/classifier/ngram.yaml").read_text())
    emb = yaml.safe_load((REPO / "recipes/classifier/embedding.yaml").read_text())
    whole = {"pooling": "whole", "epochs": 400, "lr": 3e-3, "max_tokens": 512}
    return {
        "ngram (recipe)": {"backend": "ngram", "options": ngram["options"]},
        "embedding, whole vector: MLP 256 (the embedding recipe two versions ago)": {
            "backend": "embedding",
            "options": {**whole, "hidden": 256, "l2": 1e-4},
        },
        "embedding, whole vector: logistic, L2 tuned (the previous recipe)": {
            "backend": "embedding",
            "options": {**whole, "hidden": 0, "l2_grid": OLD_L2_GRID},
        },
        "embedding, whole + chunk pooling: logistic/MLP-128 and L2 tuned (the recipe now)": {
            "backend": "embedding",
            "options": emb["options"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/cls_backends")
    ap.add_argument("--max-train", type=int, default=0, help="0: the whole training split")
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
            backend=v["backend"], seed=args.seed, max_train=args.max_train or None, options=v["options"]
        )
        r = train([data], out / f"model{i}", cfg)
        t = r["test"]
        rows[name] = {
            "all": t["all"]["macro_f1"],
            "fr": t["fr"]["macro_f1"],
            "en": t["en"]["macro_f1"],
            "valid_all": r["validation"]["all"]["macro_f1"],
            "test_n": {k: t[k]["n"] for k in ("all", "fr", "en")},
            "fit_seconds": r["fit_seconds"],
            "fit_log": r["fit_log"],
        }
        print(
            f"{name}: test macro-F1 all {t['all']['macro_f1']:.3f} fr {t['fr']['macro_f1']:.3f} "
            f"en {t['en']['macro_f1']:.3f} (fit {r['fit_seconds']} s)",
            flush=True,
        )
    n = next(iter(rows.values()))["test_n"]
    print(
        f"\n| model | validation macro-F1 | test macro-F1 all ({n['all']}) | French ({n['fr']}) "
        f"| English ({n['en']}) |\n|---|---:|---:|---:|---:|"
    )
    for name, r in rows.items():
        print(f"| {name} | {r['valid_all']:.3f} | {r['all']:.3f} | {r['fr']:.3f} | {r['en']:.3f} |")
    (out / "backends.json").write_text(json.dumps({"max_train": args.max_train, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
