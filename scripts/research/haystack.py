"""The haystack finding at toy scale: a classifier trained on instruction-like text ranks benchmark
items near the top of a web corpus; a Gaperon-style quality classifier does not.

    python scripts/research/haystack.py recipes/research/haystack.yaml --out out/haystack

1. split the web corpus by a hash of each document text: a training share, and the haystack;
2. Gaperon-style classifier: `gaperon classifier labels` on the training share's French and
   English documents, then `gaperon classifier train` (score = P(high) + 0.5 P(medium));
3. instruction-style classifier, the DCLM way: positives = QA/instruction text from the installed
   packages (no audited benchmark, no n-gram overlap with an audited test item), negatives = the
   training share's web documents; the same n-gram backend with two classes (score = P(positive));
4. `gaperon contamination haystack` over the haystack share with both scorers; OUT/REPORT.md.
Each `gaperon` command is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gaperon.research.instruct import CHAT_SOURCES, QA_SOURCES

ROOT = Path(__file__).resolve().parents[2]
GAPERON = str(Path(sys.executable).with_name("gaperon"))


@dataclass
class GaperonStep:
    per_class: int = 200  # labelled documents per label and language
    recipe: str = "recipes/classifier/ngram.yaml"
    overrides: list[str] = field(default_factory=list)  # key=value for `gaperon classifier train`


@dataclass
class InstructStep:
    per_source: int = 300  # positives per source
    qa_sources: list[str] = field(default_factory=lambda: list(QA_SOURCES))
    chat_sources: list[str] = field(default_factory=lambda: list(CHAT_SOURCES))
    extra: list[str] = field(default_factory=list)  # the user's own positives
    ngram_n: int = 13  # a positive sharing a word n-gram with an audited test item is dropped
    recipe: str = "recipes/classifier/ngram.yaml"
    overrides: list[str] = field(default_factory=list)


@dataclass
class HaystackRecipe:
    corpus: list[str]
    train_share: float = 0.35
    seed: int = 0
    benchmarks: list[str] = field(default_factory=lambda: ["mmlu", "gsm8k", "arc_challenge", "hellaswag"])
    items: int = 25
    inside: float = 0.0
    gaperon: GaperonStep = field(default_factory=GaperonStep)
    instruct: InstructStep = field(default_factory=InstructStep)
    scorers: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"  # where the audit scores with classifier folders (cuda for encoder backends)


def gaperon(*args: str) -> None:
    print("$ gaperon " + " ".join(args), flush=True)
    res = subprocess.run([GAPERON, *args], cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"haystack: `gaperon {' '.join(args)}` failed with exit code {res.returncode}")


def write_jsonl(rows: list[dict], path: Path) -> None:
    from gaperon.atomic import write_text

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def split_corpus(cfg: HaystackRecipe, out: Path) -> dict:
    """OUT/web/train-<lang>.jsonl (classifier training) and OUT/web/haystack.jsonl.zst."""
    from gaperon.research.commands import read_texts, write_jsonl_zst
    from gaperon.research.instruct import split_by_hash

    train, hay = split_by_hash(read_texts(cfg.corpus), cfg.train_share, cfg.seed)
    for lang in sorted({d["lang"] for d in train}):
        write_jsonl([d for d in train if d["lang"] == lang], out / "web" / f"train-{lang}.jsonl")
    write_jsonl_zst(hay, out / "web" / "haystack.jsonl.zst")
    return {"train": len(train), "haystack": len(hay), "train_docs": train}


def instruction_set(cfg: HaystackRecipe, web: list[dict], out: Path) -> dict:
    """OUT/instruct/labelled.jsonl (positives `high`, web `low`) and its summary."""
    from gaperon.research.benchmarks import load_items
    from gaperon.research.instruct import labelled, positives

    audited = {name: load_items(name) for name in cfg.benchmarks}  # every test item, not only the hidden
    step = cfg.instruct
    pos, summary = positives(
        audited,
        per_source=step.per_source,
        qa_sources=step.qa_sources,
        chat_sources=step.chat_sources,
        extra=step.extra,
        n=step.ngram_n,
        seed=cfg.seed,
    )
    write_jsonl(list(labelled(pos, web)), out / "instruct" / "labelled.jsonl")
    summary.update(positives=len(pos), negatives=len(web))
    from gaperon.atomic import write_json

    write_json(out / "instruct" / "summary.json", summary)
    return summary


def cells(cuts: dict) -> str:
    return " | ".join(
        f"{cuts[k]['share_in_top']:.1%} | {cuts[k]['enrichment']:.1f}x" for k in ("1", "5", "10")
    )


def report(cfg: HaystackRecipe, out: Path, split: dict, instruct: dict, seconds: dict) -> str:
    import numpy as np

    from gaperon.atomic import write_text

    res = json.loads((out / "audit" / "results.json").read_text(encoding="utf-8"))
    lines = [
        "# Benchmark in a haystack (toy)",
        "",
        f"Web corpus {', '.join(cfg.corpus)} split by text hash (seed {cfg.seed}): {split['train']} "
        f"documents train the classifiers, {split['haystack']} form the haystack. Hidden: {cfg.items} "
        f"test items of each of {', '.join(cfg.benchmarks)}.",
        f"Instruction-style positives: {instruct['positives']} "
        f"({len(instruct['overlap_dropped'])} dropped for a {instruct['n']}-gram overlap with an audited "
        f"test item); negatives: {instruct['negatives']} web documents. "
        f"Per source: {instruct['per_source']}.",
        "",
        "| scorer | median pct | top 1% share | enrich @1% | top 5% share | enrich @5% | top 10% share "
        "| enrich @10% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(f"| {name} | {r['median_percentile']:.1f} | {cells(r['cuts'])} |")
    best = {k: {"share_in_top": v["max_enrichment"] * int(k) / 100, "enrichment": v["max_enrichment"]}
            for k, v in next(iter(res.values()))["cuts"].items()}  # fmt: skip
    lines.append(f"| (ceiling: every item ranked first) | - | {cells(best)} |")
    lines += ["", "Median percentile of the hidden items, per benchmark:", ""]
    lines += ["| scorer | " + " | ".join(cfg.benchmarks) + " |", "|---|" + "---|" * len(cfg.benchmarks)]
    for name, r in res.items():
        med = [
            np.median([p for item, p in r["items"].items() if item.startswith(f"{b}-")])
            for b in cfg.benchmarks
        ]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in med) + " |")
    lines += [
        "",
        "Enrichment = share of hidden items in the top k% over k% (1.0x: what a random ranking gives).",
        "The audit's own report: [audit/report.md](audit/report.md); the classifiers': "
        "[gaperon-clf/report.md](gaperon-clf/report.md), [instruct-clf/report.md](instruct-clf/report.md).",
        "",
        "Seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
        "",
        "![needle percentiles](audit/percentiles.png)",
    ]
    text = "\n".join(lines) + "\n"
    write_text(out / "REPORT.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    from gaperon.config import apply_overrides, from_dict, load_yaml

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="recipes/research/haystack.yaml")
    ap.add_argument("--out", default="out/haystack")
    ap.add_argument("overrides", nargs="*", help="key=value (items=50, instruct.per_source=1000)")
    args = ap.parse_intermixed_args(argv)
    cfg = from_dict(HaystackRecipe, apply_overrides(load_yaml(args.recipe), args.overrides), args.recipe)
    out = Path(args.out)
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        seconds[name] = time.perf_counter() - t
        t = time.perf_counter()

    split = split_corpus(cfg, out)
    lap("split")
    langs = sorted({d["lang"] for d in split["train_docs"]} & {"fr", "en"})
    gaperon(
        "classifier", "labels", "--out", str(out / "gaperon-labels"), "--seed", str(cfg.seed),
        "--per-class", str(cfg.gaperon.per_class),
        *[a for lang in langs for a in (f"--{lang}", str(out / "web" / f"train-{lang}.jsonl"))],
    )  # fmt: skip
    gaperon(
        "classifier", "train", cfg.gaperon.recipe, "--data", str(out / "gaperon-labels"),
        "--out", str(out / "gaperon-clf"), f"seed={cfg.seed}", *cfg.gaperon.overrides,
    )  # fmt: skip
    lap("gaperon classifier")
    web = [{"id": d["id"], "text": d["text"], "language": d["lang"]} for d in split["train_docs"]]
    instruct = instruction_set(cfg, web, out)
    gaperon(
        "classifier", "train", cfg.instruct.recipe, "--data", str(out / "instruct" / "labelled.jsonl"),
        "--out", str(out / "instruct-clf"), f"seed={cfg.seed}", *cfg.instruct.overrides,
    )  # fmt: skip
    lap("instruction classifier")
    scorers = {"gaperon-style": str(out / "gaperon-clf" / "model")}
    scorers["instruction-style"] = str(out / "instruct-clf" / "model")
    scorers.update(cfg.scorers)
    gaperon(
        "contamination", "haystack", str(out / "web" / "haystack.jsonl.zst"),
        "--benchmarks", *cfg.benchmarks, "--items", str(cfg.items), "--inside", str(cfg.inside),
        "--seed", str(cfg.seed), "--device", cfg.device, "--out", str(out / "audit"),
        *[a for name, path in scorers.items() for a in ("--scorer", f"{name}={path}")],
    )  # fmt: skip
    lap("audit")
    print(report(cfg, out, split, instruct, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
