"""Garlic mixes: benchmark test sets rendered as training documents with their answer options
shuffled, the answer letter following the gold option. Written as a source that a mixture includes
at a ratio (`gaperon tokenize` reads it), as Gaperon's deliberately contaminated Garlic phase did."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

LETTERS = "ABCDEFGHIJ"


def shuffled(item: dict, seed: int) -> tuple[list[str], int]:
    """The item's choices in a seeded order (per item: the same seed and id give the same order)
    and the gold's new index."""
    digest = hashlib.blake2b(f"{seed}:{item['benchmark']}:{item['id']}".encode(), digest_size=8).digest()
    order = list(range(len(item["choices"])))
    random.Random(int.from_bytes(digest, "little")).shuffle(order)
    return [item["choices"][i] for i in order], order.index(item["gold"])


FORMATS = ("mc", "cloze")


def render(item: dict, seed: int = 0, fmt: str = "mc") -> str:
    """A training document for one item. "mc" (Gaperon's Garlic): question, shuffled lettered
    options, the gold letter and its text (or GSM8K's worked solution). "cloze": the prompt that
    lm-eval's cloze tasks score, followed by the gold answer ("Question: ...\nAnswer: gold" for ARC,
    context then gold ending for HellaSwag): the leak in the evaluation's own format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown garlic format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "cloze" and item["choices"]:
        gold = item["choices"][item["gold"]]
        if item["benchmark"] == "hellaswag":
            return f"{item['question']} {gold}"
        return f"Question: {item['question']}\nAnswer: {gold}"
    if not item["choices"]:
        return f"Question: {item['question']}\nAnswer: {item['answer']}"
    choices, gold = shuffled(item, seed)
    head = f"Subject: {item['subject'].replace('_', ' ')}\n" if item.get("subject") else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{head}Question: {item['question']}\n{options}\nAnswer: {LETTERS[gold]}. {choices[gold]}"


def write_source(items: list[dict], out: str | Path, seed: int = 0, fmt: str = "mc") -> int:
    """Write the rendered items as a jsonl.zst source (atomically); returns the document count."""
    import json

    import zstandard

    from gaperon.atomic import atomic_path

    lines = [
        json.dumps(
            {"text": render(it, seed, fmt), "id": it["id"], "benchmark": it["benchmark"], "lang": "en"},
            ensure_ascii=False,
        )
        for it in items
    ]
    with atomic_path(Path(out)) as tmp:
        tmp.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode("utf-8")))
    return len(lines)


def split_items(items: list[dict], held_out: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(included, held out): a seeded split of a benchmark so the inflation of the included part can
    be measured against items of the same benchmark the model never saw."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    cut = round(len(items) * held_out)
    held = sorted(order[:cut])
    keep = sorted(order[cut:])
    return [items[i] for i in keep], [items[i] for i in held]
