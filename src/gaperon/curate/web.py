"""Web inputs: WARC files through datatrove's WARC record handling, HTML through its Trafilatura extractor.

A WARC file is read record by record with warcio; each response record's payload goes through
datatrove's `process_record` (payload type, charset, id/url/date), so what counts as an HTML page is
datatrove's rule. What datatrove skips silently is counted here with its file and record number:
records that are no page (`warc_not_a_response`: warcinfo, request, metadata...), payloads that are
not HTML (`non_html_payload`) or cannot be decoded (`undecodable_payload`). A truncated file (a gzip
member cut short, a record shorter than its Content-Length) is an error naming the file and record:
the rest of the file is lost, so the user re-fetches it rather than curating a silent remainder.

`ExtractStep` turns the HTML of those documents (and of jsonl/parquet records when the input format
is `html`) into text with datatrove's `Trafilatura` extractor, run in datatrove's sandbox process
with a per-document timeout. Trafilatura's cross-document deduplication is off: it keeps a
process-wide cache, so its output would depend on which documents share a task (MinHash dedups).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline

from gaperon.curate.steps import CountingStep
from gaperon.errors import DataError

WARC = (".warc", ".warc.gz", ".warc.zst", ".arc", ".arc.gz")
HTML_TYPES = ("text/html", "application/xhtml+xml")
_TAG = re.compile(r"<(?:!doctype|[a-z][a-z0-9]*)[\s/>]", re.IGNORECASE)
_CHUNK = 1 << 20


def is_warc(path: str) -> bool:
    return path.lower().endswith(WARC)


def location(path: str, n: int) -> str:
    """`file:line`, or `file:record N` in a WARC file."""
    return f"{path}:record {n}" if is_warc(path) else f"{path}:{n}"


def looks_like_html(text: str) -> bool:
    """An HTML tag near the start; plain text given as HTML is dropped, not run through Trafilatura."""
    return _TAG.search(text, 0, 65536) is not None


class _Payload:
    """The record as datatrove's `process_record` reads it, with the payload already read once."""

    def __init__(self, record: Any, payload: bytes) -> None:
        self.rec_type, self.rec_headers, self._payload = record.rec_type, record.rec_headers, payload

    def content_stream(self) -> io.BytesIO:
        return io.BytesIO(self._payload)


def _check_gzip_members(path: str) -> None:
    """warcio ends quietly at a gzip member cut short; Python's gzip reader says so."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as f:
            while f.read(_CHUNK):
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: truncated or corrupt gzip stream ({e}); fetch the file again") from None


def read_warc(path: str, idx: int, counts: Any) -> Iterator[Document]:
    """Documents of one WARC file; `counts` is the reader's `ReaderCounts`."""
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    from gaperon.curate.io import open_binary

    if path.endswith(".gz"):
        _check_gzip_members(path)
    source = Path(path).name.split(".")[0]
    n = 0
    try:
        with open(path, "rb") if path.endswith(".gz") else open_binary(path) as f:
            for n, record in enumerate(ArchiveIterator(f), 1):
                where = location(path, n)
                if record.rec_type not in ("response", "conversion"):
                    counts.bad("warc_not_a_response", where)
                    continue
                payload = record.content_stream().read()
                if getattr(record.raw_stream, "limit", 0) > 0:
                    raise DataError(
                        f"{where}: truncated WARC record ({record.raw_stream.limit} bytes of its "
                        "Content-Length missing); fetch the file again"
                    )
                data = process_record(_Payload(record, payload))
                if not data:
                    counts.bad(_why_skipped(record, payload), where)
                    continue
                if not data["text"].strip():
                    counts.bad("empty_text", where)
                    continue
                meta = {"url": data["url"], "date": data["date"], "source": source, "_file": idx, "_line": n}
                meta["_html"] = record.rec_type == "response"  # WET conversions are text already
                yield Document(text=data["text"], id=str(data["id"]), metadata=meta)
    except ArchiveLoadFailed as e:
        raise DataError(f"{path}:record {n + 1}: not a readable WARC record: {e}") from None


def _why_skipped(record: Any, payload: bytes) -> str:
    """Why datatrove's `process_record` returned nothing for a response record."""
    import magic

    mime = record.rec_headers.get("WARC-Identified-Payload-Type") or magic.from_buffer(payload, mime=True)
    if mime in HTML_TYPES or (record.rec_type == "conversion" and mime == "text/plain"):
        return "undecodable_payload"
    return "non_html_payload"


class ExtractStep(CountingStep):
    """HTML -> main text with datatrove's Trafilatura; documents that yield nothing are counted by reason."""

    name = "extract"

    def __init__(self, files: list[str], timeout: float = 5.0, favour_precision: bool = True) -> None:
        from datatrove.pipeline.extractors import Trafilatura

        super().__init__()
        self.files = files
        self.extractor = Trafilatura(favour_precision=favour_precision, timeout=timeout, deduplicate=False)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        from datatrove.pipeline.extractors.base import ExtractorSandbox

        from gaperon.curate.io import ReaderCounts

        counts = ReaderCounts()
        with ExtractorSandbox(timeout=self.extractor.timeout) as box:
            for doc in data:
                counts.seen(doc)
                if doc.metadata.pop("_html", False):
                    with self.track_time():
                        reason = self._extract(doc, box)
                    if reason is not None:
                        counts.drop(doc, reason)
                        path = self.files[doc.metadata["_file"]]
                        counts.locate(reason, location(path, doc.metadata["_line"]))
                        continue
                counts.keep(doc)
                yield doc
        self.write_counts(counts, rank)

    def _extract(self, doc: Document, box: Any) -> str | None:
        if not looks_like_html(doc.text):
            return "not_html"
        try:
            text = box.process_document(doc.text, self.extractor.extract)
        except TimeoutError:
            return "extraction_timeout"
        except EOFError:  # the sandbox process died (Trafilatura raised or ran out of memory)
            return "extraction_failed"
        if not text or not text.strip():
            return "no_text_extracted"
        doc.text = text
        return None
