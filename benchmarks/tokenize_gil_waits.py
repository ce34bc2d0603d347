"""Where one tokenize worker loses time against a bare encode: a diagnostic, not a peer comparison.

`gaperon tokenize --workers 1` encodes in the main thread while a reading thread and a writing thread
run beside it; tiktoken releases the GIL while it encodes and takes it back after each document.
This times the encode calls inside `tokenize` by wall clock and by the main thread's CPU clock: the
difference is time the encoder spent waiting (for the GIL: a thread holding it in a C call such as
a JSON parse cannot be made to drop it early), and the main thread's voluntary context switches
count the waits. (A raw encode in a second thread shows why the encoder stays in the main one.)
Variants take the other threads away one at a time: "no writer" drops the encoded
batches instead of writing them, "pre-read" reads the whole input before the first encode.
The raw encode's texts are parsed afresh for each repeat (a str keeps the UTF-8 copy that tiktoken
makes of it, which would make a second pass over the same strings cheaper).
It patches `gaperon.data.pack` and `.encode` internals, as a profiler would: keep it in step with
those modules (tests/data/test_data_benchmarks.py runs it).
Usage: python benchmarks/tokenize_gil_waits.py [--mb 64] [--repeat 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tokenize_throughput import corpus, write_corpus  # the sibling script (benchmarks/ is on sys.path)

from gaperon.data import encode, pack


def _switches() -> int:
    """Voluntary context switches of the calling thread (Linux), or -1."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class _NoWriter:
    def __init__(self, write, depth: int) -> None: ...
    def put(self, item) -> None: ...
    def close(self) -> None: ...
    def stop(self) -> None: ...


def _raw_timed(tik, texts: list[str]) -> tuple[float, float, float, int]:
    c, w = time.thread_time(), time.perf_counter()
    for t in texts:
        tik.encode_to_numpy(t, allowed_special=set(), disallowed_special=())
    return time.perf_counter() - w, time.thread_time() - c, 0.0, 0


def _pre_read(items, depth: int):  # noqa: ARG001 - _read_ahead's signature
    yield from list(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=64)
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    docs, what = corpus(args.mb)
    tmp = Path(tempfile.mkdtemp(prefix="gaperon-gil-"))
    src = tmp / "corpus.jsonl.zst"
    lines = write_corpus(docs, src)
    del docs

    tok = encode.tokenizer_from_spec("llama3")
    tok.identity()  # cached: tokenize's record of the tokenizer is not timed
    tik = tok.fast_encoder()
    tik.encode_to_numpy("warm", allowed_special=set(), disallowed_special=())

    inside = [0.0, 0.0]  # wall, main-thread CPU inside the encode calls
    one = encode.Encoder._one

    def timed_one(self, text):
        w, c = time.perf_counter(), time.thread_time()
        try:
            return one(self, text)
        finally:
            inside[0] += time.perf_counter() - w
            inside[1] += time.thread_time() - c

    encode.Encoder._one = timed_one  # type: ignore[method-assign]
    variants = {
        "tokenize (reader + writer threads)": (pack._read_ahead, pack._WriteBehind),
        "tokenize, no writer": (pack._read_ahead, _NoWriter),
        "tokenize, pre-read": (_pre_read, pack._WriteBehind),
        "tokenize, neither": (_pre_read, _NoWriter),
    }
    second = "raw encode_to_numpy, a second thread"
    rows: dict[str, list[tuple[float, float, float, int]]] = {"raw encode_to_numpy": [], second: []}
    for _ in range(args.repeat):
        texts = [json.loads(line)["text"] for line in lines]
        rows["raw encode_to_numpy"].append(_raw_timed(tik, texts))
        texts = [json.loads(line)["text"] for line in lines]
        thread = threading.Thread(target=lambda ts: rows[second].append(_raw_timed(tik, ts)), args=(texts,))
        thread.start()
        thread.join()
        del texts
        for name, (reader, writer) in variants.items():
            pack._read_ahead, pack._WriteBehind = reader, writer  # type: ignore[misc]
            out = tmp / "out"
            inside[:] = [0.0, 0.0]
            s = _switches()
            w = time.perf_counter()
            pack.tokenize([src], out, pack.TokenizeOptions(workers=1), progress=False)
            wall = time.perf_counter() - w
            rows.setdefault(name, []).append((wall, inside[1], inside[0] - inside[1], _switches() - s))
            shutil.rmtree(out)
        pack._read_ahead, pack._WriteBehind = variants["tokenize (reader + writer threads)"]  # type: ignore[misc]
    shutil.rmtree(tmp)

    print(f"corpus: {what}, {len(lines)} documents; {os.cpu_count()} CPUs; median of {args.repeat}")
    print(f"{'':36s} {'wall s':>7s} {'encode CPU s':>13s} {'encode waits s':>15s} {'switches':>9s}")
    raw = statistics.median(r[0] for r in rows["raw encode_to_numpy"])
    for name, rs in rows.items():
        med = [statistics.median(r[k] for r in rs) for k in range(4)]
        extra = "" if name.startswith("raw") else f"   raw / this = {raw / med[0]:.3f}"
        print(f"{name:36s} {med[0]:7.3f} {med[1]:13.3f} {med[2]:15.3f} {int(med[3]):9d}{extra}")


if __name__ == "__main__":
    main()
