"""`gaperon tokenize --workers N`: N processes that read, parse and encode their own share of the
inputs (whole files, or every N-th block of every file), for the main process to merge in input order.

No single reader feeds them: each worker decompresses and parses what it encodes, so reading scales
with the workers. What they send back is (per-document hash, lang, repeat; flat ids; lengths) per
block, in an order the main process restores (`gaperon.data.pack` merges and writes).
"""

from __future__ import annotations

import heapq
import logging
import multiprocessing
import os
import pickle
import queue
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gaperon.data import shards as fmt
from gaperon.data.encode import Encoder, text_hash, tokenizer_from_spec
from gaperon.data.readers import JSONL_SUFFIXES, ReaderReport, ReadOptions, read_blocks

if TYPE_CHECKING:
    from gaperon.data.pack import TokenizeOptions

log = logging.getLogger(__name__)


# Block mode's costs, as fractions of encoding the same text (Llama-3.1 tokenizer, 66 MB of the
# sample corpus; benchmarks/RESULTS.md): what every worker spends on a jsonl file's blocks that it
# does not own (decompressing and splitting lines), by compression; and what a worker spends more per
# token of its own blocks than a worker reading whole files (the blocks' trips through a queue: 2
# workers on 8 even files used 11% more worker CPU per token than whole files, 2.5 points of it the
# skipping). And a file's text bytes per byte on disk.
_SKIP_COST = {".zst": 0.025, ".gz": 0.088, "": 0.013}
_BLOCK_OVERHEAD = 0.09
_EXPANSION = {".zst": 4.0, ".gz": 3.7, "": 1.0}


def parallel_plan(files: list[Path], workers: int) -> str:
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


def start_workers(
    files: list[Path], read_opts: ReadOptions, options: TokenizeOptions, tok: Any, out: Path
) -> BlockWorkers | FileWorkers:
    """The N workers, started: whole files or blocks, as `options.parallel` says or the plan picks."""
    plan = options.parallel if options.parallel != "auto" else parallel_plan(files, options.workers)
    log.info(
        "%d workers: %s", options.workers, "a whole file each" if plan == "files" else "blocks of every file"
    )
    if plan == "files":
        return FileWorkers(files, read_opts, options, tok, out / _PARTS)
    return BlockWorkers(files, read_opts, options, tok)


_BLOCK_RECORDS = 128  # records per block: small enough to balance workers, big enough to amortise IPC


class BlockWorkers:
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


_PARTS = ".tokenize-parts"  # file mode's encoded files, waiting to be merged (inside the output folder)


class FileWorkers:
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
                msg = _get(self.done, self.procs)
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
        encoder: Encoder | None = Encoder(tokenizer_from_spec(spec))
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


def _encode_block(encoder: Encoder, docs: list[dict]) -> tuple[list, np.ndarray, np.ndarray]:
    """A block as workers send it: per-document (hash, lang, repeat), flat ids, lengths."""
    flat, lengths = encoder([d["text"] for d in docs]) if docs else _NO_IDS
    return [(text_hash(d["text"]), d["lang"], d["repeat"]) for d in docs], flat, lengths


def _get(q: Any, procs: list) -> tuple:
    """The next message on `q`; a dead worker among `procs` (the ones that write to it) is an error."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            dead = next((p for p in procs if not p.is_alive()), None)
            if dead is not None:
                raise RuntimeError(f"tokenize worker {dead.name} died (exit code {dead.exitcode})") from None


def _receive(q: Any, proc: Any) -> tuple:
    """The next message of one block worker; its exception is raised here."""
    msg = _get(q, [proc])
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
        encoder = Encoder(tokenizer_from_spec(spec))
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
