"""Reading inputs into datatrove Documents and writing curated jsonl.zst, one file per input file.

Input files are sharded across tasks (file i goes to task i % tasks) and documents keep their input
order, and the writer names its output after the input file: the output files are the same bytes
whatever the number of tasks. Each document carries its origin (`_file`, `_line`), which makes the
choice of the copy MinHash keeps independent of the sharding; the final writer drops those keys.

WARC files (and, with the input format `html`, jsonl/parquet records whose text is HTML) carry
`_html`: the planner then adds `gaperon.curate.web.ExtractStep` right after the reader.

A non-empty input file from which no document comes out is an error, never an empty success
(datatrove's own reader logs a warning and yields nothing from .zst files without `zstandard`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline

from gaperon.curate.steps import CountingStep, Counts
from gaperon.errors import DataError

JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".ndjson", ".ndjson.zst")
PARQUET = (".parquet",)
MAX_WHERE = 20  # file:line locations kept per reason in the report


def input_kind(path: Path) -> str | None:
    from gaperon.curate.web import is_warc

    name = path.name.lower()
    if is_warc(name):
        return "warc"
    if name.endswith(JSONL):
        return "jsonl"
    if name.endswith(PARQUET):
        return "parquet"
    return None


def expand_inputs(paths: list[str]) -> list[str]:
    """Files in a deterministic order; folders are walked (sorted) for supported files."""
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and input_kind(f))
            if not found:
                raise DataError(f"{p}: folder holds no .jsonl[.gz|.zst], .parquet or .warc[.gz] file")
            out.extend(found)
        elif p.is_file():
            if input_kind(p) is None:
                want = ".jsonl[.gz|.zst], .parquet or .warc[.gz]"
                raise DataError(f"{p}: unsupported input type (want {want})")
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def open_binary(path: str) -> io.BufferedIOBase:
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader
        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        )
    return open(path, "rb")  # noqa: SIM115


class ReaderCounts(Counts):
    def __init__(self) -> None:
        super().__init__()
        self.where: dict[str, list[str]] = {}

    def bad(self, reason: str, where: str) -> None:
        self.docs_in += 1
        self.lang.setdefault("unknown", {"in": 0, "kept": 0, "dropped": 0})["in"] += 1
        self.lang["unknown"]["dropped"] += 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.locate(reason, where)

    def locate(self, reason: str, where: str) -> None:
        locs = self.where.setdefault(reason, [])
        if len(locs) < MAX_WHERE:
            locs.append(where)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "where": self.where}


class InputReader(CountingStep):
    """Reads this task's share of the input files; malformed records are counted with file:line."""

    name = "read"

    def __init__(
        self,
        files: list[str],
        text_field: str = "text",
        id_field: str = "id",
        progress: bool = False,
        html: bool = False,
    ) -> None:
        super().__init__()
        self.files, self.text_field, self.id_field, self.progress = files, text_field, id_field, progress
        self.html = html  # the text of jsonl/parquet records is HTML, extracted by the next step

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        counts = ReaderCounts()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(desc=f"task {rank}", unit=" docs", position=rank, leave=False, mininterval=1)
        for idx in range(rank, len(self.files), world_size):
            path = self.files[idx]
            n_before = counts.kept
            for doc in self._read(idx, path, counts):
                counts.seen(doc)
                counts.keep(doc)
                if bar is not None:
                    bar.update()
                yield doc
            if counts.kept == n_before and os.path.getsize(path) > 0:
                raise DataError(f"{path}: a non-empty file yields no document ({self._why(counts)})")
        if bar is not None:
            bar.close()
        self.write_counts(counts, rank)

    @staticmethod
    def _why(counts: ReaderCounts) -> str:
        return ", ".join(f"{n} {r} (first at {counts.where[r][0]})" for r, n in counts.dropped.items()) or (
            "no record in it"
        )

    def _read(self, idx: int, path: str, counts: ReaderCounts) -> Iterator[Document]:
        kind = input_kind(Path(path))
        if kind == "warc":
            from gaperon.curate.web import read_warc

            yield from read_warc(path, idx, counts)
            return
        if kind == "parquet":
            yield from self._read_parquet(idx, path, counts)
            return
        try:
            with open_binary(path) as f:
                for line_no, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    where = f"{path}:{line_no}"
                    try:
                        obj = json.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        counts.bad("invalid_utf8", where)
                        continue
                    except ValueError:
                        counts.bad("malformed_json", where)
                        continue
                    doc = self._make(obj, idx, line_no, where, counts)
                    if doc is not None:
                        yield doc
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot read: {e}") from None
        except Exception as e:  # noqa: BLE001 - zstandard raises its own ZstdError, re-raised otherwise
            if type(e).__name__ == "ZstdError":
                raise DataError(f"{path}: corrupt zstd stream: {e}") from None
            raise

    def _read_parquet(self, idx: int, path: str, counts: ReaderCounts) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors have no common base; re-raised as ours
            raise DataError(f"{path}: not a readable parquet file: {e}") from None
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row += 1
                doc = self._make(obj, idx, row, f"{path}:{row}", counts)
                if doc is not None:
                    yield doc

    def _make(self, obj: Any, idx: int, line_no: int, where: str, counts: ReaderCounts) -> Document | None:
        if not isinstance(obj, dict):
            counts.bad("not_an_object", where)
            return None
        text = obj.get(self.text_field)
        if text is None:
            counts.bad(f"missing_{self.text_field}", where)
            return None
        if not isinstance(text, str):
            counts.bad(f"non_string_{self.text_field}", where)
            return None
        if not text.strip():
            counts.bad("empty_text", where)
            return None
        given = obj.get("metadata")
        meta: dict[str, Any] = given if isinstance(given, dict) else {}
        meta = {
            **{k: v for k, v in obj.items() if k not in (self.text_field, self.id_field, "metadata")},
            **meta,
        }
        meta.setdefault("source", Path(self.files[idx]).name.split(".")[0])
        meta["_file"], meta["_line"] = idx, line_no
        if self.html:
            meta["_html"] = True
        doc_id = obj.get(self.id_field)
        return Document(text=text, id=str(doc_id) if doc_id is not None else where, metadata=meta)


class ShardWriter(CountingStep):
    """Writes documents to `folder/NNNNN[_stem].jsonl.zst`, one file per input file, atomically."""

    name = "write"

    def __init__(
        self, folder: str, final: bool = False, stems: list[str] | None = None, level: int = 3
    ) -> None:
        super().__init__()
        self.folder, self.final, self.stems, self.level = folder, final, stems, level

    def _name(self, idx: int) -> str:
        return f"{idx:05d}_{self.stems[idx]}.jsonl.zst" if self.stems else f"{idx:05d}.jsonl.zst"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        import zstandard

        os.makedirs(self.folder, exist_ok=True)
        counts = Counts()
        cur: int | None = None
        raw = out = None

        def close() -> None:
            assert out is not None and raw is not None and cur is not None
            out.close()
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()
            os.replace(
                os.path.join(self.folder, f".{self._name(cur)}.tmp"),
                os.path.join(self.folder, self._name(cur)),
            )

        for doc in data:
            counts.seen(doc)
            idx = int(doc.metadata["_file"])
            if idx != cur:
                if cur is not None:
                    close()
                cur = idx
                raw = open(os.path.join(self.folder, f".{self._name(idx)}.tmp"), "wb")  # noqa: SIM115
                out = zstandard.ZstdCompressor(level=self.level).stream_writer(raw, closefd=False)
            assert out is not None
            out.write(self.encode(doc))
            counts.keep(doc)
            yield doc
        if cur is not None:
            close()
        self.write_counts(counts, rank)

    def encode(self, doc: Document) -> bytes:
        if not self.final:
            rec: dict[str, Any] = {"id": doc.id, "text": doc.text, "metadata": doc.metadata}
        else:
            meta = {k: v for k, v in doc.metadata.items() if not k.startswith("_")}
            rec = {"id": doc.id, "text": doc.text, "source": meta.get("source"), "lang": meta.get("language")}
            rec["metadata"] = meta
        return json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n"


class ShardReader(CountingStep):
    """Reads back the intermediate files a previous segment of this task wrote (same sharding)."""

    name = "read intermediate"

    def __init__(self, folder: str, n_files: int) -> None:
        super().__init__()
        self.folder, self.n_files = folder, n_files

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        for idx in range(rank, self.n_files, world_size):
            path = os.path.join(self.folder, f"{idx:05d}.jsonl.zst")
            if not os.path.exists(path):
                continue  # every document of that input file was dropped earlier
            with open_binary(path) as f:
                for raw in f:
                    rec = json.loads(raw)
                    yield Document(text=rec["text"], id=rec["id"], metadata=rec["metadata"])
