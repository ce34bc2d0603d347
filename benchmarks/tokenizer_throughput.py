"""Tokenizer throughput: gaperon's Rust-backed Llama-3.1 tokenizer against tiktoken and transformers.

Encodes the bundled bilingual corpus (data/samples/*.jsonl.zst: French, English, code) with each
peer in the same run, checks every document gets the same ids as tiktoken, and prints tokens/s and
ratios. Usage: python benchmarks/tokenizer_throughput.py [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def read_corpus() -> list[str]:
    import zstandard

    texts: list[str] = []
    for name in ("fr.jsonl.zst", "en.jsonl.zst", "code.jsonl.zst"):
        path = SAMPLES / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing (the bundled sample corpus)")
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
            texts += [
                json.loads(line)["text"] for line in io.TextIOWrapper(raw, encoding="utf-8") if line.strip()
            ]
    return texts


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0, help="use every n-th document only (0: all)")
    args = ap.parse_args()

    import tiktoken
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    from gaperon.tokenizer import llama3_tokenizer
    from gaperon.tokenizer.loading import llama3_ranks_path

    texts = read_corpus()
    if args.limit > 1:
        texts = texts[:: args.limit]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    t0 = time.perf_counter()
    tok = llama3_tokenizer()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok.identity()
    ident_s = time.perf_counter() - t0
    ref: tiktoken.Encoding = MetaTokenizer(llama3_ranks_path()).model

    t_ours, ours = best_time(lambda: tok.encode_batch(texts), args.repeat)
    t_rust, rust = best_time(lambda: tok._hf_encode_batch(texts, False), args.repeat)
    t_one, _ = best_time(lambda: [tok.encode(t) for t in texts], args.repeat)
    t_tik, theirs = best_time(lambda: ref.encode_ordinary_batch(texts, num_threads=args.threads), args.repeat)
    t_tik1, _ = best_time(lambda: [ref.encode_ordinary(t) for t in texts], args.repeat)
    mismatched = sum(a != b or a != c for a, b, c in zip(ours, theirs, rust))
    n_tokens = sum(map(len, ours))

    rows = [
        ("gaperon encode_batch", t_ours),
        ("gaperon encode, one at a time", t_one),
        ("gaperon's Rust HF backend, encode_batch_fast", t_rust),
        (f"tiktoken encode_ordinary_batch ({args.threads} threads)", t_tik),
        ("tiktoken encode_ordinary, one at a time", t_tik1),
    ]
    try:
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as d:
            hf = AutoTokenizer.from_pretrained(tok.save(d))
            t_hf, hf_ids = best_time(lambda: hf(texts, add_special_tokens=False)["input_ids"], args.repeat)
        mismatched += sum(a != b for a, b in zip(ours, hf_ids))
        rows.append(("transformers AutoTokenizer(saved folder)(texts)", t_hf))
    except ImportError:
        pass

    print(f"corpus: {len(texts)} documents, {mb:.1f} MB, {n_tokens:,} tokens; threads {args.threads}")
    print(
        f"llama3_tokenizer() build {build_s:.2f} s, identity() {ident_s:.2f} s, tiktoken fast path: "
        f"{tok.uses_tiktoken}"
    )
    print(f"documents whose ids differ between gaperon, its HF backend, tiktoken, transformers: {mismatched}")
    for label, t in rows:
        print(f"{label:55s} {n_tokens / t / 1e6:7.2f} M tok/s   gaperon batch / this = {t / t_ours:5.2f}x")


if __name__ == "__main__":
    main()
