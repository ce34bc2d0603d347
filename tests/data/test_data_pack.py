"""tokenize: shards round-trip to the documents, held-out split, determinism, resume, refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import ByteTokenizer, make_docs, write_jsonl

from gaperon.data.pack import TokenizeOptions, text_hash, tokenize
from gaperon.data.readers import DataError
from gaperon.data.shards import load_manifest


def _stream(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's tokens concatenated, and the global document end offsets."""
    m = load_manifest(root)
    toks, ends, base = [], [], 0
    for s in m["splits"][split]["shards"]:
        t = np.fromfile(root / s["bin"], dtype="<u4")
        e = np.load(root / s["idx"])
        assert e.dtype == np.dtype("<u8") and len(t) == s["tokens"] == int(e[-1]) and len(e) == s["documents"]
        toks.append(t)
        ends.append(e.astype(np.int64) + base)
        base += len(t)
    if not toks:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return np.concatenate(toks), np.concatenate(ends)


def _documents(root: Path, split: str, decode) -> list[str]:
    toks, ends = _stream(root, split)
    starts = np.concatenate([[0], ends[:-1]])
    return [decode(toks[a:b].tolist()) for a, b in zip(starts, ends)]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.bin")) + sorted(root.rglob("*.idx"))
    }


def test_round_trip_with_the_real_tokenizer(tmp_path, llama3):
    docs = make_docs(120, "fr") + make_docs(60, "en", seed=1)
    src = write_jsonl(tmp_path / "in.jsonl.zst", docs, "zst")
    m = tokenize(
        [src],
        tmp_path / "out",
        TokenizeOptions(tokenizer="llama3", shard_tokens=3000, val_fraction=0.05),
        progress=False,
    )
    assert m["tokenizer"]["identity"] == llama3.identity() and m["source"] == "out"
    train = _documents(tmp_path / "out", "train", lambda ids: llama3.decode(ids))
    val = _documents(tmp_path / "out", "val", lambda ids: llama3.decode(ids))
    eos = "<|end_of_text|>"
    assert all(d.endswith(eos) and d.count(eos) == 1 for d in train + val)
    want_val = [d["text"] for d in docs if text_hash(d["text"]) < 0.05]
    assert 0 < len(want_val) < len(docs) // 4
    assert [d[: -len(eos)] for d in val] == want_val
    assert [d[: -len(eos)] for d in train] == [d["text"] for d in docs if text_hash(d["text"]) >= 0.05]
    assert not set(train) & set(val)
    splits = m["splits"]
    assert splits["train"]["documents"] + splits["val"]["documents"] == len(docs)
    assert sum(c["documents"] for c in splits["train"]["languages"].values()) == splits["train"]["documents"]
    assert set(splits["train"]["languages"]) == {"fr", "en"}
    shard_sizes = [s["tokens"] for s in splits["train"]["shards"]]
    assert len(shard_sizes) > 3 and all(n >= 3000 for n in shard_sizes[:-1])
    assert not (tmp_path / "out" / "progress.json").exists()


def test_worker_count_does_not_change_a_byte(tmp_path, llama3):
    src = write_jsonl(tmp_path / "in.jsonl", make_docs(300))
    opts = dict(tokenizer="llama3", shard_tokens=5000, batch_docs=16)
    tokenize([src], tmp_path / "one", TokenizeOptions(workers=1, **opts), progress=False)
    tokenize([src], tmp_path / "two", TokenizeOptions(workers=2, **opts), progress=False)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert len(_files(tmp_path / "one")) > 4


class Boom(Exception):
    pass


def test_interrupted_run_resumes_into_identical_shards(tmp_path):
    tok = ByteTokenizer()
    src = write_jsonl(tmp_path / "in.jsonl", [{**d, "dup": 1 + i % 3} for i, d in enumerate(make_docs(200))])
    opts = TokenizeOptions(
        tokenizer=tok, shard_tokens=40000, val_fraction=0.1, repeat_field="dup", batch_docs=7
    )
    ref = tokenize([src], tmp_path / "ref", opts, progress=False)

    seen = []

    def crash_after_three(split, shard):
        seen.append(shard["bin"])
        if len(seen) == 3:
            raise Boom

    out = tmp_path / "out"
    with pytest.raises(Boom):
        tokenize([src], out, opts, progress=False, on_shard=crash_after_three)
    with pytest.raises(DataError, match="not finished"):
        load_manifest(out)
    kept = {p: (out / p).stat().st_mtime_ns for p in seen}
    (out / "train" / ".00009.bin.tmp-deadbeef").write_bytes(b"half a shard")  # as if killed mid-write
    redone = []
    m = tokenize([src], out, opts, progress=False, on_shard=lambda _split, s: redone.append(s["bin"]))
    assert _files(out) == _files(tmp_path / "ref")
    assert m["splits"] == ref["splits"] and m["reader"] == ref["reader"]
    assert not set(redone) & set(seen)
    assert {p: (out / p).stat().st_mtime_ns for p in seen} == kept  # finished shards were not rewritten
    assert not list(out.rglob(".*tmp-*"))


def test_rehydrated_documents_are_emitted_repeat_times_but_once_in_val(tmp_path):
    tok = ByteTokenizer()
    docs = [{"text": f"document number {i}", "n": 3} for i in range(40)]
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    m = tokenize(
        [src],
        tmp_path / "out",
        TokenizeOptions(tokenizer=tok, repeat_field="n", val_fraction=0.1),
        progress=False,
    )
    train = _documents(tmp_path / "out", "train", tok.decode)
    val = _documents(tmp_path / "out", "val", tok.decode)
    assert len(val) >= 1 and len(train) == 3 * (40 - len(val))
    assert train[:3] == [train[0]] * 3
    assert m["splits"]["val"]["documents"] == len(val)


def test_val_split_is_never_empty_and_can_be_disabled(tmp_path):
    tok = ByteTokenizer()
    docs = make_docs(30)
    src = write_jsonl(tmp_path / "in.jsonl", docs)
    m = tokenize([src], tmp_path / "a", TokenizeOptions(tokenizer=tok, val_fraction=1e-9), progress=False)
    assert m["splits"]["val"]["documents"] == 1
    forced = min(docs, key=lambda d: text_hash(d["text"]))["text"]
    assert _documents(tmp_path / "a", "val", tok.decode) == [forced]
    m = tokenize([src], tmp_path / "b", TokenizeOptions(tokenizer=tok, val_fraction=0), progress=False)
    assert m["splits"]["val"]["documents"] == 0 and m["splits"]["train"]["documents"] == 30


def test_refusals_tokenizer_mismatch_other_inputs_foreign_folder(tmp_path, llama3):
    src = write_jsonl(tmp_path / "in.jsonl", make_docs(20))
    out = tmp_path / "out"
    m = tokenize([src], out, TokenizeOptions(tokenizer=ByteTokenizer()), progress=False)
    again = tokenize([src], out, TokenizeOptions(tokenizer=ByteTokenizer()), progress=False)
    assert again == m  # complete and identical: a no-op
    with pytest.raises(DataError, match="tokenizer mismatch"):
        tokenize([src], out, TokenizeOptions(tokenizer="llama3"), progress=False)
    with pytest.raises(DataError, match="tokenizer mismatch"):
        tokenize([src], out, TokenizeOptions(tokenizer=ByteTokenizer("v2")), progress=False)
    with pytest.raises(DataError, match="other inputs or options"):
        tokenize([src], out, TokenizeOptions(tokenizer=ByteTokenizer(), shard_tokens=10), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(DataError, match="not a gaperon token folder"):
        tokenize([src], foreign, TokenizeOptions(tokenizer=ByteTokenizer()), progress=False)
    with pytest.raises(DataError, match="val-fraction"):
        tokenize([src], tmp_path / "x", TokenizeOptions(tokenizer=ByteTokenizer(), val_fraction=1.5))


def test_bad_file_is_reported_before_any_shard_is_written(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", make_docs(50))
    bad = write_jsonl(tmp_path / "bad.jsonl", [b"{nope"])
    with pytest.raises(DataError, match=r"bad\.jsonl: yields no document"):
        tokenize([good, bad], tmp_path / "out", TokenizeOptions(tokenizer=ByteTokenizer()), progress=False)
    assert not (tmp_path / "out" / "train").exists()


def test_manifest_records_reader_report_and_format(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [*make_docs(10), b"{bad", {"text": ""}])
    tokenize(
        [src], tmp_path / "out", TokenizeOptions(tokenizer=ByteTokenizer(), source="web-fr"), progress=False
    )
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["format"] == "gaperon-tokens" and m["version"] == 1 and m["source"] == "web-fr"
    assert m["tokenizer"] == {
        "name": "bytes",
        "identity": "byte-tokenizer-v1",
        "vocab_size": 257,
        "eos_id": 256,
        "bos_id": None,  # documents start with no BOS (the tokenizer records no BOS rule)
    }
    assert m["reader"]["skipped"] == {"malformed_json": 1, "empty_text": 1}
    assert m["reader"]["first"]["malformed_json"].endswith("in.jsonl:11")


def test_folder_of_txt_files_with_an_empty_one(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"Livre {i}. " * (i + 1), encoding="utf-8")
    (folder / "empty.txt").write_text("")
    tok = ByteTokenizer()
    m = tokenize([folder], tmp_path / "out", TokenizeOptions(tokenizer=tok), progress=False)
    assert m["reader"]["skipped"] == {"empty_text": 1} and m["source"] == "out"
    docs = _documents(tmp_path / "out", "train", tok.decode) + _documents(tmp_path / "out", "val", tok.decode)
    assert sorted(docs) == sorted(f"Livre {i}. " * (i + 1) for i in range(5))


def test_writing_runs_of_documents_gives_the_same_shards_as_one_by_one(tmp_path):
    from gaperon.data.shards import SplitWriter

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=300)
    flat = rng.integers(0, 1000, size=int(lengths.sum()), dtype=np.uint32)
    ends = np.cumsum(lengths).tolist()
    langs = [("fr", "en", "code")[i % 7 % 3] for i in range(300)]
    for shard_tokens in (1, 50, 333, 10_000):
        one, run = tmp_path / f"one{shard_tokens}", tmp_path / f"run{shard_tokens}"
        a, b = SplitWriter(one, "train", shard_tokens, []), SplitWriter(run, "train", shard_tokens, [])
        start = 0
        for k, end in enumerate(ends):
            a.add(flat[start:end], langs[k], 1000 + k, 0)
            start = end
        for lo, hi in ((0, 1), (1, 2), (2, 77), (77, 78), (78, 300)):  # runs of 1 to 222 documents
            b.add_run(
                flat, ends[lo - 1] if lo else 0, ends[lo:hi], langs[lo:hi], list(range(1000 + lo, 1000 + hi))
            )
        a.close_shard()
        b.close_shard()
        assert a.done == b.done and len(a.done) >= (2 if shard_tokens < 10_000 else 1)
        assert _files(one) == _files(run)


def test_a_read_error_mid_stream_stops_the_run_cleanly(tmp_path):
    import threading

    blob = tmp_path / "x.jsonl.gz"
    write_jsonl(blob, make_docs(300), "gz")
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) * 2 // 3])  # a truncated download: fine at first, corrupt later
    out = tmp_path / "out"
    with pytest.raises(DataError, match="x.jsonl.gz"):
        tokenize(
            [blob],
            out,
            TokenizeOptions(tokenizer=ByteTokenizer(), val_fraction=0.5, shard_tokens=2000, batch_docs=8),
            progress=False,
        )
    assert (out / "progress.json").exists() and not list(out.rglob(".*tmp-*"))
    assert not [t for t in threading.enumerate() if t.name == "gaperon-tokenize-reader"]


@pytest.mark.parametrize("fraction", [1e-9, 0.1])
def test_held_out_choice_does_not_depend_on_how_much_is_read_ahead(tmp_path, monkeypatch, fraction):
    import gaperon.data.pack as pack

    src = write_jsonl(tmp_path / "in.jsonl", [*make_docs(60), b"{bad", {"text": ""}, *make_docs(40, seed=5)])
    opts = TokenizeOptions(tokenizer=ByteTokenizer(), val_fraction=fraction, shard_tokens=3000)
    kept = tokenize([src], tmp_path / "kept", opts, progress=False)
    monkeypatch.setattr(pack, "_HEAD_CHARS", 50)  # stop keeping documents after the first: scan instead
    scanned = tokenize([src], tmp_path / "scanned", opts, progress=False)
    assert _files(tmp_path / "kept") == _files(tmp_path / "scanned")
    assert kept["splits"] == scanned["splits"] and kept["reader"] == scanned["reader"]
    assert kept["reader"]["documents"] == 100 and kept["reader"]["skipped"] == {
        "malformed_json": 1,
        "empty_text": 1,
    }
    assert kept["splits"]["val"]["documents"] >= 1


def test_one_worker_writes_shards_off_the_encoding_thread_in_order(tmp_path):
    """Shards are written (and fsynced) by a writer thread beside the encoder, in input order; a
    failure there (here: the shard callback) stops the run and is raised to the caller."""
    import threading

    from gaperon.data.pack import _WriteBehind

    names: list[str] = []
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(200, seed=5))
    opts = dict(tokenizer=ByteTokenizer(), shard_tokens=3000, val_fraction=0.1)
    tokenize(
        [src],
        tmp_path / "a",
        TokenizeOptions(**opts),
        progress=False,
        on_shard=lambda split, shard: names.append(
            f"{threading.current_thread().name}:{split}:{bool(shard)}"
        ),
    )
    # every shard but each split's last (closed once the input has ended) is closed by the writer
    assert len(names) > 3 and {n.split(":")[0] for n in names[:-2]} == {"gaperon-tokenize-writer"}

    seen: list[int] = []
    behind = _WriteBehind(seen.append, depth=2)
    for i in range(50):
        behind.put(i)
    behind.close()
    assert seen == list(range(50))

    def fail_at_3(i: int) -> None:
        if i == 3:
            raise KeyError("boom")
        seen.append(i)

    seen.clear()
    behind = _WriteBehind(fail_at_3, depth=2)
    with pytest.raises(KeyError, match="boom"):
        for i in range(50):
            behind.put(i)
        behind.close()
    assert seen == [0, 1, 2]
    behind.stop()

    # A failing caller stops the writer: what it had already queued is still written (in order),
    # so the shards on disk after a failure do not depend on how far behind the writer was.
    seen.clear()
    slow = _WriteBehind(lambda i: (time.sleep(0.01), seen.append(i)), depth=8)
    for i in range(8):
        slow.put(i)
    slow.stop()
    assert seen == list(range(8))
