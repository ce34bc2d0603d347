"""`gaperon tokenize`: documents -> EOS-separated token shards, in parallel, resumable, reproducible.

Each document is [BOS] + its tokens + EOS, with BOS exactly when the tokenizer's rule says its model
is trained so (`gaperon.tokenizer.protocol.prompt_bos`; not for llama3, whose pretraining has none).

Determinism is the design constraint. Documents are numbered in input order; which split a
document goes to is a hash of its text; shard boundaries depend only on that order and on token
counts. Workers only turn text into ids and the main process writes their results in input order,
so any worker count gives byte-identical shards, and a killed run restarted with the same command
keeps its finished shards and redoes the rest into the same bytes (progress.json records, per
split, the shards done and the (document, copy) each one ended at).

One worker encodes in this process (`gaperon.data.encode`); N workers are processes of their own
(`gaperon.data.workers`) whose blocks this process merges and writes.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from gaperon import atomic
from gaperon.data import shards as fmt
from gaperon.data.encode import Encoder, text_hash, tokenizer_from_spec
from gaperon.data.readers import (
    DEFAULT_MAX_CHARS,
    DataError,
    ReaderReport,
    ReadOptions,
    expand_inputs,
    load_repeat_fn,
    read_documents,
    skip_line,
)
from gaperon.data.workers import BlockWorkers, FileWorkers, start_workers
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
    # N workers send blocks of their own size (gaperon.data.workers).
    batch_docs: int = 256
    batch_chars: int = 1 << 20
    # Fail (after writing what was read: a rerun resumes) when skipped / all records exceeds this.
    max_skip_ratio: float | None = None
    # How N workers share the inputs: "files" (a whole file to the next free worker), "blocks" (every
    # N-th block of every file), or "auto" (whichever `workers.parallel_plan` expects to finish first).
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
    tok = tokenizer_from_spec(options.tokenizer)
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
    pool = start_workers(files, read_opts, options, tok, out) if options.workers > 1 else None
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

    # Encoding happens in this (the main) thread: tiktoken 0.14 spends ~30-35% more CPU per token in
    # a second thread (benchmarks/RESULTS.md), and it releases the GIL while it encodes,
    # so reading (a thread) and writing (another) run beside it. The reader report is only touched by
    # the reading thread until it has finished (closed or exhausted).
    encoder = Encoder(tok)
    batches = _read_ahead(_batches(todo(), options), depth=4)
    behind = _WriteBehind(write, depth=4)
    try:
        for batch in batches:
            flat, lengths = encoder([d["text"] for _, d, _ in batch])
            behind.put((batch, flat, lengths))
        behind.close()
    finally:
        behind.stop()
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
        self._thread = threading.Thread(
            target=self._loop, args=(write,), name="gaperon-tokenize-writer", daemon=True
        )
        self._thread.start()

    def _loop(self, write: Callable[[Any], None]) -> None:
        while (item := self._q.get()) is not _END:
            if self._error is None:
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
        self.stop()
        self._raise()

    def stop(self) -> None:
        """End after writing what is already queued (unless the writer failed), raising nothing: the
        caller is failing, and the documents read before the failure end up in finished shards
        whatever the writer's lag was (a rerun resumes after them; its writers abort the rest)."""
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


# -- N workers (gaperon.data.workers) read, parse and encode their own share; this process merges
# their results in input order and writes them


def _run_parallel(
    pool: BlockWorkers | FileWorkers,
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
        behind.stop()
        bar.close()


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
