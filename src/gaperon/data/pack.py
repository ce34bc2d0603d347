"""`gaperon tokenize`: documents -> EOS-separated token shards, in parallel, resumable, reproducible.

Determinism is the design constraint. Documents are numbered in input order; which split a
document goes to is a hash of its text; shard boundaries depend only on that order and on token
counts. Workers only turn text into ids and the main process writes their results in input order,
so any worker count gives byte-identical shards, and a killed run restarted with the same command
keeps its finished shards and redoes the rest into the same bytes (progress.json records, per
split, the shards done and the (document, copy) each one ended at).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaperon import atomic
from gaperon.data import shards as fmt
from gaperon.data.readers import (
    DEFAULT_MAX_CHARS,
    DataError,
    ReaderReport,
    ReadOptions,
    expand_inputs,
    load_repeat_fn,
    read_documents,
)

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
    batch_docs: int = 256  # documents per encode_batch call (and per task sent to a worker)
    batch_chars: int = 1 << 20  # ... or fewer, so workers get work in ~250k-token pieces

    def check(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise DataError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1:
            raise DataError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.workers < 1:
            raise DataError(f"--workers must be >= 1, got {self.workers}")
        if self.max_chars < 1:
            raise DataError(f"--max-chars must be >= 1, got {self.max_chars}")


def text_hash(text: str) -> float:
    """A document's place in [0, 1): the held-out split is every document under val_fraction."""
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


# -- workers: each process loads the tokenizer once and turns batches of text into flat uint32 ids
_TOKENIZER = None


def _init_worker(spec: Any) -> None:
    global _TOKENIZER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _TOKENIZER = _load_tokenizer(spec)


def _encode(texts: list[str], tok=None) -> tuple[np.ndarray, np.ndarray]:
    """ids of every text with EOS appended, concatenated, plus each document's length.

    In this process (tok given) encode_batch may use every core; a worker process (one of N)
    encodes its batch on one core, so N workers use N cores and do not oversubscribe the machine.
    """
    if tok is None:
        tok = _TOKENIZER
        ids = [tok.encode(t) for t in texts]
    else:
        ids = tok.encode_batch(texts)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + 1
    total = int(lengths.sum())
    is_eos = np.zeros(total, dtype=bool)
    is_eos[np.cumsum(lengths) - 1] = True
    flat = np.empty(total, dtype=fmt.TOKEN_DTYPE)
    flat[is_eos] = tok.eos_id
    flat[~is_eos] = np.fromiter(itertools.chain.from_iterable(ids), dtype=fmt.TOKEN_DTYPE, count=total - len(ids))
    return flat, lengths


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
    return {"name": name, "identity": tok.identity(), "vocab_size": int(tok.vocab_size), "eos_id": int(tok.eos_id)}


def _job(inputs: list[Path], options: TokenizeOptions) -> dict:
    """What must be equal for a rerun to resume (or be a no-op) instead of being refused."""
    files = []
    for p in inputs:
        st = p.stat()
        files.append({"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    opts = {k: v for k, v in asdict(options).items()
            if k not in ("tokenizer", "workers", "batch_docs", "batch_chars")}
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
                f"{out} was built with tokenizer {old.get('name')!r} (identity {str(old.get('identity'))[:12]}...), "
                f"not {tok_rec['name']!r} (identity {tok_rec['identity'][:12]}...): tokenizer mismatch; "
                "use another --out folder"
            )
        if state.get("job") != job:
            raise DataError(f"{out} holds shards from other inputs or options (or inputs changed since); "
                            "use another --out folder, or remove it to start over")
        return state
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder exists and is not a gaperon token folder; use an empty or new --out")
    return None


def tokenize(
    inputs: list[str | Path], out: str | Path, options: TokenizeOptions | None = None, *,
    progress: bool = True, on_shard: Callable[[str, dict], None] | None = None,
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
        return state
    source = options.source or out.resolve().name
    read_opts = ReadOptions(options.text_field, options.repeat_field,
                            load_repeat_fn(options.repeat_fn) if options.repeat_fn else None,
                            source, options.max_chars)
    # Up front: every file yields something, and which document is forced into val (if any).
    inputs = [Path(p) for p in inputs]  # read as given: a folder of .txt may hold an empty file
    for _ in read_documents(inputs, read_opts, ReaderReport(), first_only=True):
        pass
    forced_val = _forced_val_document(inputs, read_opts, options.val_fraction)

    done = (state or {}).get("shards", {s: [] for s in fmt.SPLITS})
    for split in fmt.SPLITS:
        _clean_temp_files(out / split)
        done[split] = _verified_prefix(out, done.get(split, []))
    record = {"format": fmt.FORMAT, "version": fmt.VERSION, "source": source, "tokenizer": tok_rec,
              "job": job, "shards": done}

    def save_progress(split: str, shard: dict) -> None:
        record["shards"][split] = writers[split].done
        atomic.write_json(out / fmt.PROGRESS, record)
        if on_shard is not None:
            on_shard(split, shard)

    writers = {s: fmt.SplitWriter(out, s, options.shard_tokens, done[s], save_progress) for s in fmt.SPLITS}
    atomic.write_json(out / fmt.PROGRESS, record)
    report = ReaderReport()
    try:
        _run(inputs, read_opts, report, options, tok, writers, forced_val, progress)
        for w in writers.values():
            w.close_shard()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    manifest = {
        "format": fmt.FORMAT, "version": fmt.VERSION, "source": source, "tokenizer": tok_rec,
        "dtype": fmt.TOKEN_DTYPE.str, "reader": report.to_dict(),
        "splits": {s: fmt.split_summary(writers[s].done) for s in fmt.SPLITS}, "job": job,
    }
    atomic.write_json(out / fmt.MANIFEST, manifest)
    (out / fmt.PROGRESS).unlink(missing_ok=True)
    return manifest


def _forced_val_document(files: list[Path], opts: ReadOptions, fraction: float) -> int | None:
    """The document forced into val when no document hashes under `fraction` (so val is never empty).

    Stops at the first document that hashes under it (~1/fraction documents in): cheap in practice.
    """
    if fraction <= 0:
        return None
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


def _run(files, read_opts, report, options, tok, writers, forced_val, progress) -> None:
    from tqdm import tqdm

    frac = options.val_fraction

    def todo() -> Iterator[tuple[int, dict, str]]:
        """(index, doc, split) for the documents that still need tokenizing."""
        for i, doc in enumerate(read_documents(files, read_opts, report)):
            split = "val" if frac > 0 and (i == forced_val or text_hash(doc["text"]) < frac) else "train"
            if split == "val":
                doc["repeat"] = 1  # held-out documents are scored once, whatever their repeat count
            if writers[split].wants(i, doc["repeat"] - 1):
                yield i, doc, split

    bar = tqdm(desc=f"tokenize {writers['train'].root}", unit="doc", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    n_tokens = 0
    try:
        for batch, (flat, lengths) in _encoded(_batches(todo(), options), options, tok):
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for j, (i, doc, split) in enumerate(batch):
                ids = flat[offsets[j]: offsets[j + 1]]
                w = writers[split]
                for copy in range(doc["repeat"]):
                    if w.wants(i, copy):
                        w.add(ids, doc["lang"], i, copy)
                        n_tokens += len(ids)
            bar.update(len(batch))
            bar.set_postfix(tokens=n_tokens, refresh=False)
    finally:
        bar.close()


def _encoded(batches: Iterator[list], options: TokenizeOptions, tok) -> Iterator[tuple[list, tuple]]:
    """(batch, encoded) in input order; with N workers at most 2N batches are in flight (bounded memory)."""
    if options.workers <= 1:
        # Encoding runs in a thread (the tokenizer's native code releases the GIL) while this
        # thread reads the next batch and writes the previous one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            yield from _in_order(batches, lambda texts: pool.submit(_encode, texts, tok), 2, "result")
        return
    with multiprocessing.get_context().Pool(options.workers, initializer=_init_worker,
                                            initargs=(options.tokenizer,)) as pool:
        yield from _in_order(batches, lambda texts: pool.apply_async(_encode, (texts,)), 2 * options.workers, "get")


def _in_order(batches: Iterator[list], submit, depth: int, wait: str) -> Iterator[tuple[list, tuple]]:
    pending: collections.deque = collections.deque()
    for batch in batches:
        pending.append((batch, submit([d["text"] for _, d, _ in batch])))
        if len(pending) >= depth:
            b, r = pending.popleft()
            yield b, getattr(r, wait)()
    while pending:
        b, r = pending.popleft()
        yield b, getattr(r, wait)()
