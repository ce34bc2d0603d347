"""Curation throughput: our datatrove steps against stock datatrove 0.10.1 on the same steps, one run.

End to end, in one process on one core: read jsonl.zst -> fastText LID-176 (fr, en) -> Gopher
repetition -> Gopher quality -> write jsonl.zst. Stock datatrove uses its own reader, LanguageFilter
(its MODEL_URL set on the instance to the local lid.176.ftz), GopherRepetitionFilter,
GopherQualityFilter (spaCy blank word splitter) and JsonlWriter. Figures are documents and MB of
text per CPU-second (process time), the median of --repeat interleaved runs, and ours / stock.

MinHash signature stage (word 5-grams, 112 hashes): our vectorised signatures (the collect pass of
`minhash_dedup`, shingle sets kept for verification included), datatrove's MinhashDedupSignature
(14 buckets x 8) and datasketch's MinHash(num_perm=112) fed the same word 5-grams.

Usage: python benchmarks/curate_throughput.py [--docs 1500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def corpus(n: int) -> list[dict]:
    from gaperon.curate.demo import read_jsonl

    fr = list(read_jsonl(SAMPLES / "fr.jsonl.zst", n // 2))
    en = list(read_jsonl(SAMPLES / "en.jsonl.zst", n - n // 2))
    docs = [d for pair in zip(fr, en) for d in pair]
    return [{"id": d["id"], "text": d["text"], "source": d["source"]} for d in docs]


def drain(pipeline: list) -> None:
    data = None
    for step in pipeline:
        data = step(data, 0, 1)
    collections.deque(data or (), maxlen=0)


def cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def ours(inp: str, out: str) -> None:
    from gaperon.curate.heuristics import GopherQuality, GopherRepetition
    from gaperon.curate.io import InputReader, ShardWriter
    from gaperon.curate.lid import LanguageID

    drain(
        [
            InputReader([inp]),
            LanguageID(keep=["fr", "en"]),
            GopherRepetition(),
            GopherQuality(),
            ShardWriter(out),
        ]
    )


def stock(folder: str, out: str) -> None:
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from gaperon.curate.lid import lid176_path

    lid = LanguageFilter(languages=["fr", "en"])
    lid.model.MODEL_URL = str(lid176_path())  # the instance, not the class: no download
    drain(
        [
            JsonlReader(folder, glob_pattern="*.jsonl.zst"),
            lid,
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            JsonlWriter(out, compression="zstd"),
        ]
    )


def shingle_lists(texts: list[str]) -> list[list[bytes]]:
    from gaperon.curate.text import words

    out = []
    for t in texts:
        ws = words(t.lower())
        out.append([" ".join(ws[i : i + 5]).encode() for i in range(max(1, len(ws) - 4))])
    return out


def minhash_ours(docs, work: str) -> None:
    from gaperon.curate.minhash import MinhashCollect, MinhashParams

    step = MinhashCollect(MinhashParams(ngram=5, bands=28, rows=4))
    step.work_dir = work
    collections.deque(step.run(iter(docs)), maxlen=0)


def minhash_stock(docs, work: str) -> None:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    step = MinhashDedupSignature(work, config=MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8))
    collections.deque(step.run(iter(docs)) or (), maxlen=0)


def minhash_datasketch(texts: list[str]) -> None:
    import datasketch

    first = datasketch.MinHash(num_perm=112, seed=1)
    perm, scheme = first.permutations, first.scheme  # built once, as a user would
    for sh in shingle_lists(texts):
        m = datasketch.MinHash(num_perm=112, permutations=perm, scheme=scheme)
        m.update_batch(sh)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import logging

    import zstandard
    from datatrove.data import Document
    from loguru import logger

    logger.remove()  # datatrove's per-step logging is not what we measure
    logging.disable(logging.WARNING)
    docs = corpus(args.docs)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(
        f"corpus: {len(docs)} documents (fr/en interleaved, data/samples), {mb:.1f} MB; 1 process, CPU time"
    )
    tmp = tempfile.mkdtemp(prefix="curate-bench-")
    inp_dir = os.path.join(tmp, "in")
    os.makedirs(inp_dir)
    inp = os.path.join(inp_dir, "docs.jsonl.zst")
    payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    Path(inp).write_bytes(zstandard.ZstdCompressor().compress(payload))

    e2e: dict[str, list[float]] = {"ours": [], "stock datatrove": []}
    mh: dict[str, list[float]] = {"ours": [], "datatrove": [], "datasketch": []}
    texts = [d["text"] for d in docs]
    for r in range(args.repeat):
        e2e["ours"].append(cpu(lambda r=r: ours(inp, os.path.join(tmp, f"ours{r}"))))
        e2e["stock datatrove"].append(cpu(lambda r=r: stock(inp_dir, os.path.join(tmp, f"stock{r}"))))
        dd = [
            Document(text=d["text"], id=str(i), metadata={"_file": 0, "_line": i}) for i, d in enumerate(docs)
        ]
        mh["ours"].append(cpu(lambda dd=dd, r=r: minhash_ours(dd, os.path.join(tmp, f"mh{r}"))))
        mh["datatrove"].append(cpu(lambda dd=dd, r=r: minhash_stock(dd, os.path.join(tmp, f"mhs{r}"))))
        mh["datasketch"].append(cpu(lambda: minhash_datasketch(texts)))

    n = len(docs)
    print("\nend to end: read -> LID -> Gopher repetition -> Gopher quality -> write")
    med = {k: statistics.median(v) for k, v in e2e.items()}
    for k, s in med.items():
        print(f"  {k:16s} {n / s:8.1f} docs/CPU-s  {mb / s:6.2f} MB/CPU-s  ({s:.2f} CPU-s)")
    print(f"  ours / stock datatrove: {med['stock datatrove'] / med['ours']:.2f}x")
    print("\nMinHash signatures (word 5-grams, 112 hashes)")
    med = {k: statistics.median(v) for k, v in mh.items()}
    for k, s in med.items():
        print(f"  {k:16s} {n / s:8.1f} signatures/CPU-s")
    print(
        f"  ours / datatrove: {med['datatrove'] / med['ours']:.2f}x   ours / datasketch: "
        f"{med['datasketch'] / med['ours']:.2f}x"
    )
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
