"""`gaperon tokenize`: documents -> EOS-separated token shards, in parallel, resumable, reproducible.

Each document is [BOS] + its tokens + EOS, with BOS exactly when the tokenizer's rule says its model
is trained so (`gaperon.tokenizer.protocol.prompt_bos`; not for llama3, whose pretraining has none).

Determinism is the design constraint. Documents are numbered in input order; which split a
document goes to is a hash of its text; shard boundaries depend only on that order and on token
counts. Workers only turn text into ids and the main process writes their results in input order,
so any worker count gives byte-identical shards, and a killed run restarted with the same command
keeps its finished shards and redoes the rest into the same bytes (progress.json records, per
split, the shards done and the (document, copy) each one ended at).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import queue
import re
import shutil
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from gaperon import atomic
from gaperon.data import shards as fmt
from gaperon.data.readers import (
    DEFAULT_MAX_CHARS,
    JSONL_SUFFIXES,
    DataError,
    ReaderReport,
    ReadOptions,
    expand_inputs,
    load_repeat_fn,
    read_blocks,
    read_documents,
    skip_line,
)
from gaperon.tokenizer.fast_path import MAX_CHARS, safe_for_tiktoken
from gaperon.tokenizer.protocol import prompt_bos

log = logging.getLogger(__name__)


@dataclass
class TokenizeOptions:
    tokenizer: Any = "llama3"  # "llama3", a tokenizer path, or a Tokenizer object
    workers: int = 1
    text_field: str = "text"
    repeat_field: str | None = None
    repeat_fn: str | None = None  # "package.module:function" returning a document's repeat count
    val_fraction: float = 0.01
    shard_tokens: int = 1 << 27  # 512 MiB of uint32 per shard
    source: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS
    # One worker hands its writer thread this many documents at a time, or fewer (~250k tokens);
    # N workers send blocks of _BLOCK_RECORDS records.
    batch_docs: int = 256
    batch_chars: int = 1 << 20
    # Fail (after writing what was read: a rerun resumes) when skipped / all records exceeds this.
    max_skip_ratio: float | None = None
    # How N workers share the inputs: "files" (a whole file to the next free worker), "blocks" (every
    # N-th block of every file), or "auto" (whichever `_parallel_plan` expects to finish first).
    parallel: str = "auto"

    def check(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise DataError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1:
            raise DataError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.workers < 1:
            raise DataError(f"--workers must be >= 1, got {self.workers}")
        if self.max_chars < 1:
            raise DataError(f"--max-chars must be >= 1, got {self.max_chars}")
        if self.max_skip_ratio is not None and not 0 <= self.max_skip_ratio <= 1:
            raise DataError(f"--max-skip-ratio must be in [0, 1], got {self.max_skip_ratio}")
        if self.parallel not in ("auto", "files", "blocks"):
            raise DataError(f"parallel must be 'auto', 'files' or 'blocks', got {self.parallel!r}")


def text_hash(text: str) -> float:
    """A document's place in [0, 1): the held-out split is every document under val_fraction."""
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


# -- encoding: text -> one flat uint32 array per batch (EOS after each document), on one core
class _Encoder:
    """Turns a batch of texts into (flat ids with EOS after each document, and BOS before it when the
    tokenizer's rule says so; per-document lengths).

    Same ids as `tok.encode_batch(texts)`, but cheaper: for a tiktoken-backed Tokenizer each text
    goes through tiktoken's `encode_to_numpy` (a uint32 buffer: no Python int per token) on the
    calling thread only, so one worker is one core; tiktoken releases the GIL while it encodes, so
    the reading thread runs beside it. Texts that the tokenizer would not give to tiktoken, and
    tokenizers without a tiktoken path, go through encode_batch.
    """

    def __init__(self, tok: Any):
        self.tok = tok
        self.eos = np.array([tok.eos_id], dtype=fmt.TOKEN_DTYPE)
        self.bos = np.array([tok.bos_id] if prompt_bos(tok) else [], dtype=fmt.TOKEN_DTYPE)
        # The tiktoken Encoding itself when the tokenizer provably runs on it (one core per worker).
        self.fast = tok.fast_encoder() if getattr(tok, "uses_tiktoken", False) else None
        self.to_numpy = getattr(self.fast, "encode_to_numpy", None)  # tiktoken >= 0.8

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.fast is None:
            parts = [np.asarray(ids, dtype=fmt.TOKEN_DTYPE) for ids in self.tok.encode_batch(texts)]
        else:
            parts = [self._one(t) for t in texts]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) + 1 + len(self.bos)
        around = (self.bos, self.eos) if len(self.bos) else (None, self.eos)
        pieces = [x for p in parts for x in (around[0], p, around[1]) if x is not None]
        flat = np.concatenate(pieces)
        return flat.astype(fmt.TOKEN_DTYPE, copy=False), lengths

    def _one(self, text: str) -> np.ndarray:
        if not _safe_for_tiktoken(text):
            return np.asarray(self.tok.encode_batch([text])[0], dtype=fmt.TOKEN_DTYPE)
        if self.to_numpy is not None:
            try:
                # allowed=disallowed=nothing: special-token text is ordinary text, as in encode_ordinary
                return self.to_numpy(text, allowed_special=set(), disallowed_special=())
            except UnicodeEncodeError:  # lone surrogates: encode_ordinary repairs them, this does not
                pass
        assert self.fast is not None  # _one is only called on the tiktoken path
        return np.asarray(self.fast.encode_ordinary(text), dtype=fmt.TOKEN_DTYPE)


# fast_path's rule (a run of >= 20,000 whitespace or non-whitespace characters goes to the HF backend)
# costs ~12% of the encode time on long documents; this proves "no such run" in O(len / 10,000) steps
# and asks the tokenizer's own check only when it cannot (tests/data/test_data_pack.py compares them).
_RUN = 20_000
_SPACE, _NON_SPACE = re.compile(r"\s"), re.compile(r"\S")


def _safe_for_tiktoken(text: str) -> bool:
    """`fast_path.safe_for_tiktoken(text)`, faster: every run of 20,000 characters contains a whole
    aligned window of 10,000, so if every window holds both kinds of character there is no long run."""
    n, step = len(text), _RUN // 2
    if n < _RUN or n > MAX_CHARS:
        return safe_for_tiktoken(text)
    for k in range(0, n - step + 1, step):
        if _SPACE.search(text, k, k + step) is None or _NON_SPACE.search(text, k, k + step) is None:
            return safe_for_tiktoken(text)
    return True


def _load_tokenizer(spec: Any):
    if not isinstance(spec, str | Path):
        return spec
    from gaperon.tokenizer import load_tokenizer

    try:
        return load_tokenizer(spec)
    except ValueError as e:
        raise DataError(f"tokenizer {spec}: {e}") from None


def _tokenizer_record(tok, spec: Any) -> dict:
    name = str(spec) if isinstance(spec, str | Path) else getattr(tok, "name", type(tok).__name__)
    return {
        "name": name,
        "identity": tok.identity(),
        "vocab_size": int(tok.vocab_size),
        "eos_id": int(tok.eos_id),
        "bos_id": int(tok.bos_id) if prompt_bos(tok) else None,  # the BOS each document starts with
    }


def _job(inputs: list[Path], options: TokenizeOptions) -> dict:
    """What must be equal for a rerun to resume (or be a no-op) instead of being refused."""
    files = []
    for p in inputs:
        st = p.stat()
        files.append({"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    # Not asdict(): it deep-copies the tokenizer object (seconds for a Tokenizer) only to drop it.
    opts = {
        f.name: getattr(options, f.name)
        for f in fields(options)
        if f.name not in ("tokenizer", "workers", "batch_docs", "batch_chars", "max_skip_ratio", "parallel")
    }
    return {"inputs": files, "options": opts}


def _check_folder(out: Path, tok_rec: dict, job: dict) -> dict | None:
    """The existing state of `out` (a manifest or progress record) or None; refuse foreign content."""
    for name in (fmt.MANIFEST, fmt.PROGRESS):
        path = out / name
        if not path.is_file():
            continue
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataError(f"{path}: unreadable ({e}); remove {out} to start over") from None
        old = state.get("tokenizer", {})
        if old.get("identity") != tok_rec["identity"]:
            raise DataError(
                f"{out} was built with tokenizer {old.get('name')!r} "
                f"(identity {str(old.get('identity'))[:12]}...), "
                f"not {tok_rec['name']!r} (identity {tok_rec['identity'][:12]}...): tokenizer mismatch; "
                "use another --out folder"
            )
        if old.get("bos_id") != tok_rec["bos_id"]:
            raise DataError(
                f"{out} was built with documents starting with {old.get('bos_id')!r} (BOS id or None), "
                f"but this tokenizer's rule gives {tok_rec['bos_id']!r}: use another --out folder"
            )
        if state.get("job") != job:
            raise DataError(
                f"{out} holds shards from other inputs or options (or inputs changed since); "
                "use another --out folder, or remove it to start over"
            )
        return state
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder exists and is not a gaperon token folder; use an empty or new --out")
    return None


def tokenize(
    inputs: list[str | Path],
    out: str | Path,
    options: TokenizeOptions | None = None,
    *,
    progress: bool = True,
    on_shard: Callable[[str, dict], None] | None = None,
) -> dict:
    """Tokenize `inputs` into the token folder `out`; return its manifest (resumes an interrupted run)."""
    options = options or TokenizeOptions()
    options.check()
    out = Path(out)
    files = expand_inputs(inputs)
    tok = _load_tokenizer(options.tokenizer)
    tok_rec = _tokenizer_record(tok, options.tokenizer)
    job = _job(files, options)
    state = _check_folder(out, tok_rec, job)
    if state is not None and "splits" in state:
        log.info("%s: already complete", out)
        shards = {split: v.get("shards", []) for split, v in state["splits"].items()}
        _check_skip_ratio(state.get("reader", {}), options.max_skip_ratio, out, shards)
        return state
    source = options.source or out.resolve().name
    read_opts = ReadOptions(
        options.text_field,
        options.repeat_field,
        load_repeat_fn(options.repeat_fn) if options.repeat_fn else None,
        source,
        options.max_chars,
    )
    # N workers start first: their start-up and first blocks overlap the up-front reads below
    pool = _workers(files, read_opts, options, tok, out) if options.workers > 1 else None
    try:
        # Up front: every file yields something, and which document is forced into val (if any).
        given = [Path(p) for p in inputs]  # read as given: a folder of .txt may hold an empty file
        for _ in read_documents(given, read_opts, ReaderReport(), first_only=True):
            pass
        report = ReaderReport()
        documents = read_documents(given, read_opts, report)
        forced_val, head = _forced_val_document(documents, given, read_opts, options.val_fraction)
        if options.workers > 1:  # workers read their own blocks: this process only merges and writes
            getattr(documents, "close", lambda: None)()  # a generator: close its open file now
            report = ReaderReport()
        else:
            documents = itertools.chain(head, documents)  # the documents read to find out are not read twice

        done = (state or {}).get("shards", {s: [] for s in fmt.SPLITS})
        for split in fmt.SPLITS:
            _clean_temp_files(out / split)
            done[split] = _verified_prefix(out, done.get(split, []))
        if state is not None:
            log.info("%s", _resume_line(out, done))
        record = {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "source": source,
            "tokenizer": tok_rec,
            "job": job,
            "shards": done,
        }

        def save_progress(split: str, shard: dict) -> None:
            record["shards"][split] = writers[split].done
            # rewritten after every shard with every shard's record, so its cost grows with the square
            # of the shard count: unindented, the C encoder writes it ~5x faster (1,000 shards: 1.3
            # CPU-s over the run instead of 6.7)
            atomic.write_json(out / fmt.PROGRESS, record, indent=None)
            if on_shard is not None:
                on_shard(split, shard)

        writers = {
            s: fmt.SplitWriter(out, s, options.shard_tokens, done[s], save_progress) for s in fmt.SPLITS
        }
        atomic.write_json(out / fmt.PROGRESS, record, indent=None)
        try:
            if options.workers > 1:
                assert pool is not None
                _run_parallel(pool, options, writers, forced_val, report, progress)
            else:
                _run(documents, options, tok, writers, forced_val, progress)
            for w in writers.values():
                w.close_shard()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        summary = report.to_dict()
        log.info("%s: %s", out, skip_line(summary))
        _check_skip_ratio(summary, options.max_skip_ratio, out, {s: writers[s].done for s in fmt.SPLITS})
        manifest = {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "source": source,
            "tokenizer": tok_rec,
            "dtype": fmt.TOKEN_DTYPE.str,
            "reader": summary,
            "splits": {s: fmt.split_summary(writers[s].done) for s in fmt.SPLITS},
            "job": job,
        }
        atomic.write_json(out / fmt.MANIFEST, manifest)
        (out / fmt.PROGRESS).unlink(missing_ok=True)
        return manifest
    finally:
        if pool is not None:
            pool.close()


def _check_skip_ratio(reader: dict, limit: float | None, out: Path, shards: dict) -> None:
    """DataError when skipped / all records > limit. Called once every shard is closed and recorded in
    progress.json, so nothing is lost: a rerun (a higher limit, or fixed inputs in a new folder) resumes."""
    skipped = sum(reader.get("skipped", {}).values())
    total = skipped + int(reader.get("documents", 0))
    if limit is None or total == 0 or skipped / total <= limit:
        return
    kept = sum(len(v) for v in shards.values())
    raise DataError(
        f"{out}: {skip_line(reader)}; that is {skipped / total:.1%} of the records, above "
        f"--max-skip-ratio {limit:g}. The {kept} shard(s) written are kept; fix the inputs, or rerun "
        "the same command with a higher --max-skip-ratio to finish"
    )


def _resume_line(out: Path, done: dict) -> str:
    shards = [s for split in fmt.SPLITS for s in done.get(split, [])]
    if not shards:
        return f"resuming {out}: no shard was finished; starting from the first document"
    docs = sum(int(s["documents"]) for s in shards)
    toks = sum(int(s["tokens"]) for s in shards)
    per_split = ", ".join(f"{len(done.get(s, []))} {s}" for s in fmt.SPLITS)
    return (
        f"resuming {out}: kept {len(shards)} finished shard(s) of the interrupted run ({per_split}: "
        f"{docs:,} documents, {toks:,} tokens); re-reading the inputs to write the rest"
    )


_HEAD_CHARS = 1 << 26  # text kept in memory while looking for the first held-out document


def _forced_val_document(
    documents: Iterator[dict], files: list[Path], opts: ReadOptions, fraction: float
) -> tuple[int | None, list[dict]]:
    """The document forced into val when no document hashes under `fraction` (so val is never empty),
    and the documents taken from `documents` to find out, for the main pass to start with.

    Stops at the first document that hashes under it (~1/fraction documents in): cheap in practice.
    Past _HEAD_CHARS of text it stops there and scans the inputs on their own instead.
    """
    if fraction <= 0:
        return None, []
    head: list[dict] = []
    best, best_i, chars = 2.0, None, 0
    for i, doc in enumerate(documents):
        head.append(doc)
        h = text_hash(doc["text"])
        if h < fraction:
            return None, head
        if h < best:
            best, best_i = h, i
        chars += len(doc["text"])
        if chars > _HEAD_CHARS:
            return _scan_for_forced_val(files, opts, fraction), head
    return best_i, head


def _scan_for_forced_val(files: list[Path], opts: ReadOptions, fraction: float) -> int | None:
    best, best_i = 2.0, None
    for i, doc in enumerate(read_documents(files, opts, ReaderReport())):
        h = text_hash(doc["text"])
        if h < fraction:
            return None
        if h < best:
            best, best_i = h, i
    return best_i


def _clean_temp_files(folder: Path) -> None:
    """Half-written shards of a killed run (temporary names only: finished files are kept)."""
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def _verified_prefix(out: Path, shards: list[dict]) -> list[dict]:
    """The recorded shards that are still whole on disk (size check); everything after is redone."""
    good = []
    for s in shards:
        b, i = out / s["bin"], out / s["idx"]
        if not (b.is_file() and i.is_file() and b.stat().st_size == s["tokens"] * fmt.TOKEN_DTYPE.itemsize):
            break
        good.append(s)
    return good


def _batches(docs: Iterator[tuple[int, dict, str]], options: TokenizeOptions) -> Iterator[list]:
    batch, chars = [], 0
    for item in docs:
        batch.append(item)
        chars += len(item[1]["text"])
        if len(batch) >= options.batch_docs or chars >= options.batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _run(documents: Iterator[dict], options, tok, writers, forced_val, progress) -> None:
    from tqdm import tqdm

    frac = options.val_fraction

    def todo() -> Iterator[tuple[int, dict, str]]:
        """(index, doc, split) for the documents that still need tokenizing."""
        for i, doc in enumerate(documents):
            split = "val" if frac > 0 and (i == forced_val or text_hash(doc["text"]) < frac) else "train"
            if split == "val":
                doc["repeat"] = 1  # held-out documents are scored once, whatever their repeat count
            if writers[split].wants(i, doc["repeat"] - 1):
                yield i, doc, split

    bar = tqdm(
        desc=f"tokenize {writers['train'].root}",
        unit="doc",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    n_tokens = 0

    def write(item: tuple[list, np.ndarray, np.ndarray]) -> None:
        nonlocal n_tokens
        batch, flat, lengths = item
        n_tokens += _write_batch(batch, flat, np.cumsum(lengths).tolist(), writers)
        bar.update(len(batch))
        bar.set_postfix(tokens=n_tokens, refresh=False)

    # The reader report is only touched by the reading thread until it has finished (closed or exhausted).
    batches = _read_ahead(_batches(todo(), options), depth=4)
    behind = _WriteBehind(write, depth=4)
    try:
        for batch, (flat, lengths) in _encoded(batches, tok):
            behind.put((batch, flat, lengths))
        behind.close()
    finally:
        behind.cancel()
        batches.close()
        bar.close()


class _WriteBehind:
    """`write(item)` for each put() item, in order, on a background thread; its exception is raised
    in the caller at the next put() or at close().

    With one worker the main thread encodes: shard writes, hashing and the fsyncs of each closed
    shard (tens of ms apiece) happen here instead, beside the encoder (both release the GIL)."""

    def __init__(self, write: Callable[[Any], None], depth: int) -> None:
        self._q: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._loop, args=(write,), name="gaperon-tokenize-writer", daemon=True
        )
        self._thread.start()

    def _loop(self, write: Callable[[Any], None]) -> None:
        while (item := self._q.get()) is not _END:
            if self._error is None and not self._cancelled:
                try:
                    write(item)
                except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        self._raise()
        self._q.put(item)  # never blocks for long: the loop takes items even after an error

    def close(self) -> None:
        """Wait until everything put is written; raise the writer's exception if it had one."""
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Stop without writing what is still queued (the caller is failing: its writers abort next)."""
        self._cancelled = True
        if self._thread.is_alive():
            self._q.put(_END)
            self._thread.join()


def _write_batch(batch: list, flat: np.ndarray, ends: list[int], writers: dict) -> int:
    """Hand a batch's documents to the split writers in input order; return the tokens written.

    Consecutive single-copy documents of one split lie back to back in `flat` and go in one
    add_run() (no per-document write); a rehydrated document's copies go one by one.
    """
    written, k, n = 0, 0, len(batch)
    while k < n:
        i, doc, split = batch[k]
        w = writers[split]
        start = ends[k - 1] if k else 0
        if doc["repeat"] > 1:
            ids = flat[start : ends[k]]
            for copy in range(doc["repeat"]):
                if w.wants(i, copy):
                    w.add(ids, doc["lang"], i, copy)
                    written += len(ids)
            k += 1
            continue
        j = k + 1
        while j < n and batch[j][2] == split and batch[j][1]["repeat"] == 1:
            j += 1
        # todo() yields a single-copy document only if its writer wants it: no wants() check here
        w.add_run(
            flat, start, ends[k:j], [d["lang"] for _, d, _ in batch[k:j]], [idx for idx, _, _ in batch[k:j]]
        )
        written += ends[j - 1] - start
        k = j
    return written


# -- N workers: each reads, parses and encodes whole files, or every N-th block of every file; this
# process merges their results in input order


def _run_parallel(
    pool: _BlockWorkers | _FileWorkers,
    options: TokenizeOptions,
    writers: dict,
    forced_val: int | None,
    report: ReaderReport,
    progress: bool,
) -> None:
    """Same shards as `_run`, byte for byte: blocks come back merged by number, which is input order.

    Workers read their own share of the inputs (no single reader process to saturate), so the
    only serial work left here is deciding each document's split and writing its tokens.
    """
    from tqdm import tqdm

    frac, index, n_tokens = options.val_fraction, 0, 0
    bar = tqdm(desc=f"tokenize {writers['train'].root}", unit="doc", disable=not progress, file=sys.stderr)

    def write(item: tuple[list, np.ndarray, list[int], int]) -> None:
        nonlocal n_tokens
        batch, flat, ends, n_docs = item
        if batch:
            n_tokens += _write_batch(batch, flat, ends, writers)
        bar.update(n_docs)
        bar.set_postfix(tokens=n_tokens, refresh=False)

    # Shard writes and their fsyncs (tens of ms each) happen on a thread, as with one worker, so a
    # slow fsync does not stall this loop and the workers behind it (on a quiet machine with a fast
    # disk it made no measurable difference: benchmarks/RESULTS.md).
    behind = _WriteBehind(write, depth=8)
    try:
        for docs, flat, lengths in pool.blocks(report):
            batch, keep = [], []
            for h, lang, repeat in docs:
                split = "val" if frac > 0 and (index == forced_val or h < frac) else "train"
                if split == "val":
                    repeat = 1  # held-out documents are scored once, whatever their repeat count
                wanted = writers[split].wants(index, repeat - 1)
                keep.append(wanted)
                if wanted:
                    batch.append((index, {"repeat": repeat, "lang": lang}, split))
                index += 1
            if not all(keep):  # a resumed run: drop the documents its finished shards already hold
                ends = np.cumsum(lengths)
                starts = ends - lengths
                flat = np.concatenate([flat[a:b] for a, b, k in zip(starts, ends, keep) if k] or [flat[:0]])
                lengths = lengths[np.array(keep, dtype=bool)]
            behind.put((batch, flat, np.cumsum(lengths).tolist(), len(docs)))
        behind.close()
    finally:
        behind.cancel()
        bar.close()


_BLOCK_RECORDS = 128  # records per block: small enough to balance workers, big enough to amortise IPC


class _BlockWorkers:
    """N processes, each reading, parsing and encoding every N-th block of the inputs; started on
    construction, so whatever this process does before merging runs beside their first blocks."""

    def __init__(self, files: list[Path], read_opts: ReadOptions, options: TokenizeOptions, tok: Any) -> None:
        n = self.n = options.workers
        self.files = files
        ctx = multiprocessing.get_context()
        spec = _worker_tokenizer(ctx, tok, options)
        # 8 blocks of slack per worker: one descheduled for a moment does not stall the others at once
        self.queues = [ctx.Queue(maxsize=8) for _ in range(n)]
        self.stop = ctx.Event()
        self.procs = [
            ctx.Process(
                target=_block_worker,
                args=(k, n, files, read_opts, spec, self.queues[k], self.stop),
                daemon=True,
                name=f"gaperon-tokenize-{k}",
            )
            for k in range(n)
        ]
        _start(self.procs, self.close)

    def blocks(
        self, report: ReaderReport
    ) -> Iterator[tuple[list[tuple[float, str, int]], np.ndarray, np.ndarray]]:
        """(per-document (hash, lang, repeat), flat ids, lengths) of every block, in input order."""
        n, queues, procs = self.n, self.queues, self.procs
        number = 0
        for _ in self.files:
            while True:
                msg = _receive(queues[number % n], procs[number % n])
                if msg[0] == "eof":  # the file ended at this block: every other worker says so next
                    for j in range(n):
                        if j != number % n and _receive(queues[j], procs[j])[0] != "eof":
                            raise RuntimeError("tokenize workers disagree on where a file ends")
                    report.files += 1
                    break
                _, got, docs, flat, lengths, block_report = msg
                assert got == number, (got, number)
                number += 1
                _merge_report(report, block_report, len(docs))
                yield docs, flat, lengths

    def close(self) -> None:
        self.stop.set()
        _join(self.procs)


def _start(procs: list, close: Callable[[], None]) -> None:
    try:
        for proc in procs:
            proc.start()
    except BaseException:
        close()
        raise


def _join(procs: list) -> None:
    for proc in procs:
        if proc.pid is None:  # never started
            continue
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()


def _worker_tokenizer(ctx: Any, tok: Any, options: TokenizeOptions) -> Any:
    """What workers build their encoder from. Forked workers inherit this process's tokenizer with
    its tiktoken Encoding already built, instead of each loading the tokenizer and building the
    Encoding again (~0.3 CPU-s each for llama3, more for a tokenizer folder)."""
    if tok is not None and ctx.get_start_method() == "fork":
        getattr(tok, "uses_tiktoken", None)  # builds and caches the Encoding (Tokenizer.fast_encoder)
        return tok
    return options.tokenizer


# Block mode's costs, as fractions of encoding the same text (Llama-3.1 tokenizer, 66 MB of the
# sample corpus; benchmarks/RESULTS.md): what every worker spends on a jsonl file's blocks that it
# does not own (decompressing and splitting lines), by compression; and what a worker spends more per
# token of its own blocks than a worker reading whole files (the blocks' trips through a queue: 2
# workers on 8 even files used 11% more worker CPU per token than whole files, 2.5 points of it the
# skipping). And a file's text bytes per byte on disk.
_SKIP_COST = {".zst": 0.025, ".gz": 0.088, "": 0.013}
_BLOCK_OVERHEAD = 0.09
_EXPANSION = {".zst": 4.0, ".gz": 3.7, "": 1.0}


def _parallel_plan(files: list[Path], workers: int) -> str:
    """How `workers` workers share `files`: "files" or "blocks", whichever is estimated to finish first.

    Files: a whole file to the next free worker, in input order; its time is that schedule's
    makespan, so a big file or a short tail of files is paid on one worker. Blocks: every worker
    takes every N-th block of every file, perfectly balanced, but decompresses and splits the whole
    of every jsonl file to find its blocks: N-1 extra passes (parquet row groups and .txt files are
    read only by their owner)."""
    work, waste = [], 0.0
    for path in files:
        name = path.name.lower()
        suffix = next((x for x in (".zst", ".gz") if name.endswith(x)), "")
        size = path.stat().st_size * _EXPANSION[suffix]
        work.append(size)
        if name.endswith(JSONL_SUFFIXES):
            waste += _SKIP_COST[suffix] * size
    finish = [0.0] * workers  # the in-order schedule: each file goes to the first worker to be free
    for w in work:
        heapq.heapreplace(finish, finish[0] + w)
    blocks = sum(work) / workers * (1 + _BLOCK_OVERHEAD) + waste * (workers - 1) / workers
    return "files" if max(finish) < blocks else "blocks"


def _workers(
    files: list[Path], read_opts: ReadOptions, options: TokenizeOptions, tok: Any, out: Path
) -> _BlockWorkers | _FileWorkers:
    plan = options.parallel if options.parallel != "auto" else _parallel_plan(files, options.workers)
    log.info(
        "%d workers: %s", options.workers, "a whole file each" if plan == "files" else "blocks of every file"
    )
    if plan == "files":
        return _FileWorkers(files, read_opts, options, tok, out / _PARTS)
    return _BlockWorkers(files, read_opts, options, tok)


_PARTS = ".tokenize-parts"  # file mode's encoded files, waiting to be merged (inside the output folder)


class _FileWorkers:
    """N processes, each reading, parsing and encoding whole files (the next file to the first worker
    free) into a part file on disk, which this process merges in input order. Each file is read once
    in all, where block mode reads every jsonl file in every worker.

    At most N files are handed out beyond the one being merged, which bounds the parts on disk to
    N+1 files' ids (4 bytes a token: about the files' text size) beside the shards. Files are handed
    out only once merging starts, that is after progress.json exists, so a killed run leaves its
    parts in a token folder that the rerun recognises (and clears)."""

    def __init__(
        self, files: list[Path], read_opts: ReadOptions, options: TokenizeOptions, tok: Any, parts: Path
    ) -> None:
        self.files, self.parts = files, parts
        ctx = multiprocessing.get_context()
        spec = _worker_tokenizer(ctx, tok, options)
        self.todo, self.done, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.ahead, self.sent = options.workers, 0
        self.procs = [
            ctx.Process(
                target=_file_worker,
                args=(files, read_opts, spec, parts, self.todo, self.done, self.stop),
                daemon=True,
                name=f"gaperon-tokenize-{k}",
            )
            for k in range(options.workers)
        ]
        _start(self.procs, self.close)

    def _hand_out(self, upto: int) -> None:
        while self.sent < min(upto, len(self.files)):
            self.todo.put(self.sent)
            self.sent += 1

    def _next_done(self) -> tuple:
        while True:
            try:
                return self.done.get(timeout=1.0)
            except queue.Empty:
                for proc in self.procs:
                    if not proc.is_alive():
                        raise RuntimeError(
                            f"tokenize worker {proc.name} died (exit code {proc.exitcode})"
                        ) from None

    def blocks(
        self, report: ReaderReport
    ) -> Iterator[tuple[list[tuple[float, str, int]], np.ndarray, np.ndarray]]:
        """(per-document (hash, lang, repeat), flat ids, lengths) of every block, in input order."""
        shutil.rmtree(self.parts, ignore_errors=True)  # a killed run's parts
        self.parts.mkdir(parents=True)
        finished: dict[int, tuple] = {}
        for i in range(len(self.files)):
            self._hand_out(i + 1 + self.ahead)
            while i not in finished:
                msg = self._next_done()
                finished[msg[0]] = msg
            _, part, error = finished.pop(i)
            if part is not None:
                # A file that failed midway gives the blocks read before the failure, as in block
                # mode; its part may end in a half-written record (a full disk, say): stop there.
                with open(part, "rb") as f:
                    while True:
                        try:
                            docs, flat, lengths, block_report = pickle.load(f)
                        except EOFError:
                            break
                        except Exception:
                            if error is None:
                                raise
                            break
                        _merge_report(report, block_report, len(docs))
                        yield docs, flat, lengths
                Path(part).unlink()
            if error is not None:  # raised in input order: the first bad file is the one named
                raise error
            report.files += 1

    def close(self) -> None:
        self.stop.set()
        for _ in self.procs:
            self.todo.put(None)  # wakes a waiting worker now, not at its next poll
        _join(self.procs)
        shutil.rmtree(self.parts, ignore_errors=True)


def _file_worker(
    files: list[Path], read_opts: ReadOptions, spec: Any, parts: Path, todo: Any, done: Any, stop: Any
) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        encoder: _Encoder | None = _Encoder(_load_tokenizer(spec))
        failed: BaseException | None = None
    except BaseException as e:  # noqa: BLE001 - reported for the first file handed to this worker
        encoder, failed = None, e
    while not stop.is_set():
        try:
            i = todo.get(timeout=0.5)
        except queue.Empty:
            if _parent_gone():
                return
            continue
        if i is None:  # close(): no more files
            return
        part = parts / f"{i:08d}.part"
        part.unlink(missing_ok=True)
        try:
            if encoder is None:
                assert failed is not None
                raise failed
            with open(part, "wb") as f:
                for item in read_blocks([files[i]], read_opts, _BLOCK_RECORDS, lambda _b: True):
                    if stop.is_set():
                        return
                    if isinstance(item, Path) or item.docs is None:
                        continue
                    block = (*_encode_block(encoder, item.docs), item.report)
                    pickle.dump(block, f, protocol=pickle.HIGHEST_PROTOCOL)
            msg: tuple = (i, str(part), None)
        except BaseException as e:  # noqa: BLE001 - handed to the main process, which raises it in order
            msg = (i, str(part) if part.exists() else None, _sendable(e))
        _put(done, msg, stop)


_NO_IDS = np.zeros(0, dtype=fmt.TOKEN_DTYPE), np.zeros(0, dtype=np.int64)


def _encode_block(encoder: _Encoder, docs: list[dict]) -> tuple[list, np.ndarray, np.ndarray]:
    """A block as workers send it: per-document (hash, lang, repeat), flat ids, lengths."""
    flat, lengths = encoder([d["text"] for d in docs]) if docs else _NO_IDS
    return [(text_hash(d["text"]), d["lang"], d["repeat"]) for d in docs], flat, lengths


def _receive(q: Any, proc: Any) -> tuple:
    """The next message of one worker; its exception is raised here, and a dead worker is an error."""
    while True:
        try:
            msg = q.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"tokenize worker {proc.name} died (exit code {proc.exitcode})") from None
            continue
        if msg[0] == "error":
            raise msg[1]
        return msg


def _merge_report(report: ReaderReport, block: ReaderReport, n_docs: int) -> None:
    """Blocks are merged in input order, so "first at file:line" stays the first in the input."""
    report.documents += n_docs
    for reason, count in block.skipped.items():
        report.skipped[reason] = report.skipped.get(reason, 0) + count
        report.first.setdefault(reason, block.first[reason])
    report.truncated += block.truncated
    if block.truncated and not report.first_truncated:
        report.first_truncated = block.first_truncated


def _block_worker(
    k: int, n: int, files: list[Path], read_opts: ReadOptions, spec: Any, out: Any, stop: Any
) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        encoder = _Encoder(_load_tokenizer(spec))
        for item in read_blocks(files, read_opts, _BLOCK_RECORDS, lambda b: b % n == k):
            if stop.is_set():
                return
            if isinstance(item, Path):
                _put(out, ("eof", str(item)), stop)
            elif item.docs is not None:
                _put(out, ("block", item.number, *_encode_block(encoder, item.docs), item.report), stop)
    except BaseException as e:  # noqa: BLE001 - every failure is handed to the main process, which raises it
        _put(out, ("error", _sendable(e)), stop)
    finally:
        if stop.is_set():  # told to stop (the main process failed early): exit without flushing to it
            out.cancel_join_thread()


def _put(q: Any, msg: tuple, stop: Any) -> None:
    while not stop.is_set():
        try:
            q.put(msg, timeout=0.5)
            return
        except queue.Full:
            if _parent_gone():
                q.cancel_join_thread()  # what is queued has no reader left: exit without flushing it
                raise SystemExit(1) from None


def _parent_gone() -> bool:
    """True in a worker whose main process died (killed, say): it exits instead of waiting forever."""
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


def _sendable(e: BaseException) -> BaseException:
    """`e`, or its repr in a RuntimeError when it cannot be pickled (to cross to the main process)."""
    try:
        pickle.dumps(e)
        return e
    except Exception:  # noqa: BLE001 - any pickling failure means: send its repr instead
        return RuntimeError(repr(e))


def _encoded(batches: Iterator[list], tok) -> Iterator[tuple[list, tuple]]:
    """(batch, encoded) in input order, encoded in this (the main) thread.

    tiktoken 0.14 spent ~35% more CPU per token in a second thread than in the main one when we
    measured (2-core VM), and it releases the GIL while it encodes, so the reading thread runs beside it.
    """
    encoder = _Encoder(tok)
    for batch in batches:
        yield batch, encoder([d["text"] for _, d, _ in batch])


_END = object()


def _read_ahead(items: Iterator, depth: int) -> Generator:
    """`items`, produced by a background thread up to `depth` ahead; its exceptions are raised here.

    Reading, JSON parsing and hashing hold the GIL but the encoder does not, so this overlaps the
    input side with encoding. The thread starts on the first next() and is stopped by close().
    """
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put((_END, e))
        finally:
            if hasattr(items, "close"):
                items.close()  # close the input files now, not whenever the generator is collected

    thread = threading.Thread(target=produce, name="gaperon-tokenize-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
