"""LLM-judge quality labels (low / medium / high) for web documents: the quality classifier's data.

Gaperon labelled French and English web documents with a large instruct model on six criteria
(accuracy, clarity, coherence, grammar and language, depth of information, overall usefulness for
a general audience; deliberately not educational value). The exact prompt was not published: the
two bundled ones (`prompts/annotate_{en,fr}.txt`) are ours, built on those criteria, in the
document's language, and ask for a strict two-line answer `label: ...` / `reason: ...`.

Each labelled document is appended to the output jsonl as soon as its answer arrives (fsynced), so
a killed run resumes where it stopped: ids already in the output are skipped, and every answer is
also kept in the judge client's answer cache (`OUT.cache.jsonl`). Unparseable answers and
endpoint failures are counted per reason in the report and are not written: a rerun retries the
endpoint failures; unparseable answers stay cached (a greedy judge would repeat them): delete the
cache file to ask again.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gaperon.errors import DataError, UsageError
from gaperon.judge import Job, JudgeClient, ParseError
from gaperon.judge.language import guess_language

LABELS = ("low", "medium", "high")
GEN_PARAMS = {"temperature": 0.0, "max_tokens": 128}

_LABEL_RE = re.compile(r"^\W*label\W*:\W*(low|medium|high)\W*$", re.IGNORECASE | re.MULTILINE)
_REASON_RE = re.compile(r"^\W*(?:reason|raison)\W*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class AnnotateReport:
    """What one `annotate` run did; `failed` counts per reason what was NOT written (a rerun retries)."""

    out: str
    done: int = 0  # labels written by this run
    skipped_cached: int = 0  # ids already in the output: resumed, not asked again
    from_answer_cache: int = 0  # of `done`, answers taken from the on-disk answer cache
    failed: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, str] = field(default_factory=dict)
    read_skipped: dict[str, int] = field(default_factory=dict)  # unusable input records
    first_read_error: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        parts = [f"{self.done} labelled", f"{self.skipped_cached} already done"]
        if self.labels:
            parts.append(" ".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        if self.failed:
            parts.append("failed: " + ", ".join(f"{v} {k}" for k, v in sorted(self.failed.items())))
        if self.read_skipped:
            parts.append("bad input: " + ", ".join(f"{v} {k}" for k, v in sorted(self.read_skipped.items())))
        return f"{self.out}: " + "; ".join(parts)

    def _skip(self, reason: str, where: str) -> None:
        self.read_skipped[reason] = self.read_skipped.get(reason, 0) + 1
        self.first_read_error.setdefault(reason, where)


def parse_annotation(text: str) -> tuple[str, str]:
    """(label, reason) from a strict `label: X` / `reason: Y` answer; ParseError otherwise."""
    labels = _LABEL_RE.findall(text)
    if len(labels) != 1:
        raise ParseError(
            "no 'label: low|medium|high' line" if not labels else "several label lines",
            reason="no_label" if not labels else "ambiguous_label",
        )
    reason = _REASON_RE.search(text)
    if reason is None:
        raise ParseError("no 'reason: ...' line", reason="no_reason")
    return labels[0].lower(), reason.group(1)


def normalize_language(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip().lower().replace("-", "_")
    if v in ("fr", "fra", "fre", "french", "français", "francais") or v.startswith("fr_"):
        return "fr"
    if v in ("en", "eng", "english") or v.startswith("en_"):
        return "en"
    return v.split("_")[0]


def prompt_template(language: str) -> str:
    name = "annotate_fr.txt" if language == "fr" else "annotate_en.txt"
    return (Path(__file__).parent / "prompts" / name).read_text(encoding="utf-8")


def build_messages(text: str, language: str, max_chars: int = 6000) -> list[dict[str, str]]:
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[: cut if cut > max_chars // 2 else max_chars] + " [...]"
    return [{"role": "user", "content": prompt_template(language).replace("{document}", text)}]


# -- input ------------------------------------------------------------------------------------------


def _open_text(path: Path) -> TextIO:
    name = path.name.lower()
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="strict")
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")  # noqa: SIM115


def _iter_objects(path: Path, report: AnnotateReport) -> Iterator[tuple[dict, str]]:
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                n += 1
                yield obj, f"{path}:row {n}"
        return
    with _open_text(path) as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = f.readline()
            except UnicodeDecodeError:
                report._skip("bad_utf8", f"{path}:{lineno}")
                return  # the decoder cannot resync inside a stream: stop this file, counted
            if not line:
                return
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                report._skip("bad_json", f"{path}:{lineno}")
                continue
            if not isinstance(obj, dict):
                report._skip("not_an_object", f"{path}:{lineno}")
                continue
            yield obj, f"{path}:{lineno}"


def _records(
    paths: Iterable[Path], text_field: str, id_field: str, language_field: str | None, report: AnnotateReport
) -> Iterator[tuple[str, str, str, str]]:
    """(id, text, language, where) for every usable document, in input order."""
    seen: set[str] = set()
    for path in paths:
        for obj, where in _iter_objects(path, report):
            text = obj.get(text_field)
            if not isinstance(text, str):
                report._skip(
                    "missing_text" if text is None else "non_string_text", f"{where}: field {text_field!r}"
                )
                continue
            if not text.strip():
                report._skip("empty_text", f"{where}: field {text_field!r}")
                continue
            raw_id = obj.get(id_field)
            doc_id = str(raw_id) if raw_id is not None else f"{path.name}:{where.rsplit(':', 1)[1]}"
            if doc_id in seen:
                report._skip("duplicate_id", f"{where}: id {doc_id!r}")
                continue
            seen.add(doc_id)
            lang = normalize_language(obj.get(language_field)) if language_field else None
            yield doc_id, text, lang or guess_language(text), where


def _expand(inputs: list[str | Path]) -> list[Path]:
    suffixes = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".parquet")
    out: list[Path] = []
    for given in inputs:
        p = Path(given)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes))
            if not found:
                raise DataError(f"{p}: no .jsonl, .jsonl.zst or .parquet file in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


# -- output -----------------------------------------------------------------------------------------


def _done_ids(out: Path) -> set[str]:
    """Ids already labelled in `out`; a torn last line (killed mid-write) is cut off first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(out, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    ids = set()
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{out}:{n}: not an annotation record ({e}); move the file away to start over"
            ) from e
    return ids


def annotate(
    inputs: list[str | Path],
    out: str | Path,
    *,
    endpoint: str,
    model: str,
    api_key: str | None = None,
    text_field: str = "text",
    id_field: str = "id",
    language_field: str | None = "language",
    concurrency: int = 4,
    max_retries: int = 3,
    timeout_s: float = 60.0,
    limit: int | None = None,
    max_chars: int = 6000,
    progress: bool = True,
) -> AnnotateReport:
    """Label documents low/medium/high with an OpenAI-compatible judge; append
    {"id", "text", "language", "label", "reason"} lines to `out`. `limit`: only the first N
    documents of the input are considered (a rerun with the same limit finishes the same set)."""
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")
    if max_chars < 100:
        raise UsageError(f"max_chars must be >= 100, got {max_chars}")
    out = Path(out)
    paths = _expand(inputs)
    report = AnnotateReport(out=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_ids(out)

    def jobs() -> Iterator[Job]:
        for n, (doc_id, text, lang, _where) in enumerate(
            _records(paths, text_field, id_field, language_field, report)
        ):
            if limit is not None and n >= limit:
                return
            if doc_id in done:
                report.skipped_cached += 1
                continue
            msgs = build_messages(text, lang, max_chars)
            yield Job(doc_id, msgs, dict(GEN_PARAMS), meta=(text, lang))

    with (
        JudgeClient(
            endpoint,
            model,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            concurrency=concurrency,
            cache=out.with_name(out.name + ".cache.jsonl"),
        ) as client,
        open(out, "a", encoding="utf-8") as fh,
    ):

        def write(o) -> None:
            if not o.ok:
                return
            text, lang = o.job.meta
            label, reason = o.value
            rec = {"id": o.job.key, "text": text, "language": lang, "label": label, "reason": reason}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            report.labels[label] = report.labels.get(label, 0) + 1
            report.from_answer_cache += int(o.cached)

        run = client.run(
            jobs(), parse_annotation, on_outcome=write, progress="annotate" if progress else False
        )
    report.done = run.done
    report.failed, report.first_error = run.failed, run.first_error
    if report.done == 0 and report.skipped_cached == 0 and not report.failed and limit != 0:
        raise DataError(
            f"{', '.join(map(str, inputs))}: no usable document ({report.first_read_error or 'empty'})"
        )
    return report
