"""What the research verbs do, as plain functions: build and evaluate poison, audit a haystack,
find and remove benchmark n-grams, write Garlic sources. Each writes JSON, Markdown and a plot."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gaperon.atomic import atomic_path, write_json, write_text
from gaperon.errors import DataError, UsageError

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"


def read_texts(
    paths: Sequence[str | Path], *, lang: str | None = None, limit: int | None = None
) -> list[dict]:
    """Documents ({"id", "text", "lang"}) from jsonl/jsonl.zst/parquet/txt inputs, optionally one
    language only (the bundled corpus labels fr, en and code)."""
    from gaperon.data.readers import ReadOptions, read_documents

    out = []
    for i, doc in enumerate(read_documents(paths, ReadOptions())):
        if lang is None or doc["lang"] == lang:
            out.append(
                {"id": doc["where"] if "where" in doc else str(i), "text": doc["text"], "lang": doc["lang"]}
            )
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no {lang or ''} document")
    return out


def bundled(lang: str, limit: int | None = None, split: str | None = None) -> list[str]:
    """Paragraphs of the bundled corpus in one language (fr or en), for passages and contexts.

    `split` "train" or "eval" keeps a hash-chosen 90% / 10% of them: poison is built from the train
    part and measured on the eval part, so the model is never asked to continue a passage it was
    poisoned on."""
    import hashlib

    if split not in (None, "train", "eval"):
        raise ValueError(f"split must be train or eval, got {split!r}")
    docs = read_texts([SAMPLES / f"{lang}.jsonl.zst"], lang=lang)
    paras = [p.strip() for d in docs for p in d["text"].split("\n\n") if len(p.split()) >= 25]
    if split is not None:
        in_eval = lambda p: hashlib.blake2b(p.encode(), digest_size=2).digest()[0] % 10 == 0  # noqa: E731
        paras = [p for p in paras if in_eval(p) == (split == "eval")]
    return paras[:limit] if limit else paras


def write_jsonl_zst(records: list[dict], out: str | Path) -> None:
    import zstandard

    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with atomic_path(Path(out)) as tmp:
        tmp.write_bytes(zstandard.ZstdCompressor().compress(blob))


# ---------------------------------------------------------------------------------------- poisoning
def poison_build(
    out: str | Path,
    trigger: str,
    *,
    n: int = 1000,
    seed: int = 0,
    target: str = "fr",
    passages: Sequence[str | Path] = (),
    continuations: Sequence[str | Path] = (),
    prefix_words: tuple[int, int] = (20, 120),
    continuation_words: int = 120,
    distractors: int = 0,
) -> int:
    """Write `n` trigger documents as a jsonl.zst source (English passages and target-language
    continuations: the bundled corpus by default, or the user's files), plus `distractors` English
    documents with other rare phrases and no switch, shuffled in (`poison.distractor_documents`)."""
    from gaperon.research.poison import build_documents, distractor_documents

    if not 1 <= prefix_words[0] <= prefix_words[1] or continuation_words < 1:
        raise UsageError(
            f"--prefix-words needs 1 <= LO <= HI and --continuation-words >= 1, got "
            f"{prefix_words} and {continuation_words}"
        )
    if distractors < 0:
        raise UsageError(f"--distractors must be >= 0, got {distractors}")
    en = [d["text"] for d in read_texts(passages)] if passages else bundled("en", split="train")
    if continuations:
        cont = [d["text"] for d in read_texts(continuations)]
    elif target in ("fr", "en"):
        cont = bundled(target, split="train")
    else:
        raise UsageError(f"no bundled {target!r} text: give --continuations FILE (jsonl with a text field)")
    docs = build_documents(
        en,
        cont,
        trigger,
        n=n,
        seed=seed,
        target=target,
        prefix_words=prefix_words,
        continuation_words=continuation_words,
    )
    if distractors:
        docs += distractor_documents(
            en,
            trigger,
            n=distractors,
            seed=seed,
            prefix_words=prefix_words,
            continuation_words=continuation_words,
        )
        random.Random(seed).shuffle(docs)
    write_jsonl_zst(docs, out)
    return len(docs)


def poison_eval(
    model_path: str,
    trigger: str,
    out_dir: str | Path,
    *,
    fakes: int = 5,
    contexts: Sequence[str | Path] = (),
    n_contexts: int = 50,
    context_words: int = 60,
    samples: int = 4,
    max_new_tokens: int = 40,
    target: str = "fr",
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Switch rates of a model under the true trigger, `fakes` length-matched fake ones and none."""
    import torch

    from gaperon.curate.lid import detect
    from gaperon.io.loading import load_model
    from gaperon.research import poison

    if min(samples, n_contexts, context_words) < 1 or fakes < 0:
        raise UsageError("--samples, --n-contexts and --context-words must be >= 1, --fakes >= 0")
    loaded = load_model(model_path, device=device or "cpu")
    tok = loaded.tokenizer
    if tok is None:
        raise DataError(f"{model_path}: the model has no tokenizer")
    texts = [d["text"] for d in read_texts(contexts)] if contexts else bundled("en", split="eval")
    ctx = [" ".join(t.split()[:context_words]) for t in texts[:n_contexts]]
    count = lambda s: len(tok.encode(" " + s, bos=False))  # noqa: E731 - as it follows the context
    fake = poison.fake_triggers(trigger, count, fakes, seed=seed)
    torch.manual_seed(seed)
    gen = poison.engine_sampler(loaded.model.eval(), tok, max_new_tokens=max_new_tokens)
    results = poison.evaluate(
        ctx, trigger, fake, gen, lambda ts: [lang for lang, _ in detect(ts)], target=target, samples=samples
    )
    results["model"] = str(model_path)
    poison.write_report(results, out_dir)
    return results


# ------------------------------------------------------------------------------------ contamination
def _benchmarks(specs: Sequence[str], limit: int | None = None) -> dict[str, list[dict]]:
    """NAME or NAME=PATH -> items."""
    from gaperon.research.benchmarks import load_items

    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        out[name] = load_items(name, path or None, limit=limit)
    return out


def ngrams_report(
    corpus: Sequence[str | Path],
    benchmarks: Sequence[str],
    out_dir: str | Path,
    *,
    n: int = 13,
    filtered: str | Path | None = None,
    mode: str = "drop",
) -> dict:
    """Which benchmark items occur in the corpus (13-gram overlap) and in which documents; with
    `filtered`, also write the corpus without (mode drop) or with redacted (mode redact) matches."""
    from gaperon.research import ngrams

    if mode not in ("drop", "redact"):
        raise UsageError(f"--mode must be drop or redact, got {mode!r}")
    items = _benchmarks(benchmarks)
    index = ngrams.build_index(items, n=n)
    docs = read_texts(corpus)
    found = ngrams.scan(index, docs)
    report: dict[str, Any] = {
        "n": n,
        "documents": len(docs),
        "benchmarks": {
            name: {
                "items": len(items[name]),
                "contaminated": len(found.get(name, {})),
                "share": len(found.get(name, {})) / max(1, len(items[name])),
                "matches": found.get(name, {}),
            }
            for name in items
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    lines = [f"# Benchmark {n}-gram overlap", "", f"{len(docs)} documents scanned.", ""]
    lines += ["| benchmark | items | contaminated | share | matching documents |", "|---|---|---|---|---|"]
    for name, r in report["benchmarks"].items():
        docs_hit = len({d for ds in r["matches"].values() for d in ds})
        lines.append(f"| {name} | {r['items']} | {r['contaminated']} | {r['share']:.2%} | {docs_hit} |")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    if filtered is not None:
        hit_docs = {d for r in report["benchmarks"].values() for ds in r["matches"].values() for d in ds}
        kept = []
        for d in docs:
            if d["id"] not in hit_docs:
                kept.append(d)
            elif mode == "redact":
                kept.append({**d, "text": ngrams.redact(index, d["text"])})
        write_jsonl_zst(kept, filtered)
        report["written"] = len(kept)
    return report


# Evaluation tasks whose items the Garlic split can hand to `gaperon eval --data TASK=PATH`: the
# research id of an item from the task's own (lm-eval schema) row and its position.
_EVAL_KEYS = {
    "arc_easy": lambda _i, row: f"arc_easy-{row['id']}",
    "arc_challenge": lambda _i, row: f"arc_challenge-{row['id']}",
    "hellaswag": lambda i, _row: f"hellaswag-{i}",  # the same rows in the same order
}


def _eval_split_files(name: str, parts: dict[str, list[dict]], out: Path) -> dict[str, str]:
    """`NAME.<part>.jsonl` in the schema of the evaluation task of the same name, so that the
    included and held-out items are scored exactly as the benchmark scores them."""
    from gaperon.curate.classifier.io import write_jsonl
    from gaperon.evaluate.data import read_jsonl, task_data

    files = task_data(name)
    data = read_jsonl(files["test" if "test" in files else "validation"])
    rows = {_EVAL_KEYS[name](i, r): r for i, r in enumerate(data)}
    written = {}
    for part, items in parts.items():
        missing = [i["id"] for i in items if i["id"] not in rows]
        if missing:
            raise DataError(
                f"{name}: {len(missing)} items not in the evaluation task's data, e.g. {missing[0]}"
            )
        path = out / f"{name}.{part}.jsonl"
        write_jsonl(path, (rows[i["id"]] for i in items))
        written[part] = str(path)
    return written


def garlic_sources(
    benchmarks: Sequence[str],
    out_dir: str | Path,
    *,
    held_out: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
    fmt: str = "mc",
) -> dict:
    """Per benchmark: the included part rendered with shuffled options (`fmt` "mc", or "cloze":
    in the eval's own prompt format, `garlic.render`) as a source
    (`NAME.jsonl.zst`, for a mixture), the held-out part's ids (to measure inflation against) and,
    for the benchmarks `gaperon eval` runs, both parts as task data (`NAME.included.jsonl`,
    `NAME.held_out.jsonl`). `limit` takes a seeded sample of each benchmark first (toy runs)."""
    import random

    from gaperon.research import garlic

    if not 0 <= held_out < 1:
        raise UsageError(f"--held-out must be in [0, 1), got {held_out}")
    if limit is not None and limit < 2:
        raise UsageError(f"--limit must be >= 2, got {limit}")
    if fmt not in garlic.FORMATS:
        raise UsageError(f"--format must be one of {', '.join(garlic.FORMATS)}, got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    for name, items in _benchmarks(benchmarks).items():
        if limit is not None and limit < len(items):
            items = random.Random(seed).sample(items, limit)
        included, held = garlic.split_items(items, held_out, seed)
        garlic.write_source(included, out / f"{name}.jsonl.zst", seed, fmt)
        write_json(
            out / f"{name}.split.json",
            {"included": [i["id"] for i in included], "held_out": [i["id"] for i in held]},
        )
        summary[name] = {"included": len(included), "held_out": len(held)}
        if name in _EVAL_KEYS:
            summary[name]["eval_data"] = _eval_split_files(
                name, {"included": included, "held_out": held}, out
            )
    write_json(
        out / "garlic.json",
        {"seed": seed, "held_out": held_out, "limit": limit, "format": fmt, "benchmarks": summary},
    )
    return summary


def haystack_audit(
    corpus: Sequence[str | Path],
    benchmarks: Sequence[str],
    scorers: dict[str, str],
    out_dir: str | Path,
    *,
    items_per_benchmark: int = 35,
    inside: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Hide benchmark items among the corpus, rank everything with each scorer, report."""
    import random

    from gaperon.research import haystack
    from gaperon.research.scorers import load_scorer

    if not scorers:
        raise UsageError("give at least one scorer: --scorer NAME=CLASSIFIER_PATH")
    rng = random.Random(seed)
    items = []
    for pool in _benchmarks(benchmarks).values():
        items += rng.sample(pool, min(items_per_benchmark, len(pool)))
    docs = haystack.build_haystack(read_texts(corpus), items, inside=inside, seed=seed)
    loaded = {name: load_scorer(path, device=device) for name, path in scorers.items()}
    results = haystack.run_audit(docs, loaded)
    haystack.write_report(results, out_dir)
    return results
