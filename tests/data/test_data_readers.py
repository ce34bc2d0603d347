"""Readers: every format, every kind of bad record counted with its first file:line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import make_docs, write_jsonl

from gaperon.data.readers import (
    Block,
    DataError,
    ReaderReport,
    ReadOptions,
    expand_inputs,
    load_repeat_fn,
    read_blocks,
    read_documents,
)


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_jsonl_formats_yield_the_same_documents(tmp_path, compress):
    docs = make_docs(5)
    suffix = {None: "", "gz": ".gz", "zst": ".zst"}[compress]
    path = write_jsonl(tmp_path / f"x.jsonl{suffix}", docs, compress)
    got = list(read_documents([path]))
    assert [d["text"] for d in got] == [d["text"] for d in docs]
    assert {d["lang"] for d in got} == {"fr"} and all(d["repeat"] == 1 for d in got)
    assert got[2]["where"] == f"{path}:3"


def test_every_bad_record_is_counted_with_its_first_location(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"text": "good one"},
            b"{not json",
            b'{"text": "caf\xe9 latin-1"}',
            {"title": "no text"},
            {"text": 42},
            {"text": "   \n"},
            "[1, 2]",
            b"{broken again",
            {"text": "good two", "lang": "en"},
        ],
    )
    report = ReaderReport()
    got = list(read_documents([path], report=report))
    assert [d["text"] for d in got] == ["good one", "good two"]
    assert got[1]["lang"] == "en" and got[0]["lang"] == "unknown"
    assert report.skipped == {
        "malformed_json": 2,
        "invalid_utf8": 1,
        "missing_text": 1,
        "non_string_text": 1,
        "empty_text": 1,
        "not_an_object": 1,
    }
    assert report.first["malformed_json"] == f"{path}:2"
    assert report.first["invalid_utf8"] == f"{path}:3"
    assert report.first["missing_text"] == f"{path}:4"
    assert report.first["non_string_text"] == f"{path}:5"
    assert report.first["empty_text"] == f"{path}:6"
    assert report.first["not_an_object"] == f"{path}:7"
    assert report.documents == 2 and report.files == 1
    assert "malformed_json (first at" in report.summary()


def test_huge_documents_are_truncated_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": "a" * 50}, {"text": "b" * 5}, {"text": "c" * 80}])
    report = ReaderReport()
    got = list(read_documents([path], ReadOptions(max_chars=20), report))
    assert [len(d["text"]) for d in got] == [20, 5, 20]
    assert report.truncated == 2 and report.first_truncated == f"{path}:1"


def test_a_file_yielding_nothing_is_an_error_naming_it(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "fine"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [b"{oops", {"text": ""}])
    with pytest.raises(DataError, match=r"bad\.jsonl: yields no document .*malformed_json.*bad\.jsonl:1"):
        list(read_documents([good, bad]))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jsonl: yields no document \(file is empty\)"):
        list(read_documents([empty]))


def test_txt_folders_one_document_per_file_in_sorted_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("deuxième", encoding="utf-8")
    (tmp_path / "d" / "a.txt").write_text("premier", encoding="utf-8")
    (tmp_path / "d" / "sub" / "c.txt").write_bytes(b"\xff\xfe broken")
    (tmp_path / "d" / "notes.md").write_text("ignored")
    report = ReaderReport()
    got = list(read_documents([tmp_path / "d"], ReadOptions(source="books"), report))
    assert [d["text"] for d in got] == ["premier", "deuxième"]
    assert got[0]["source"] == "books"
    assert report.skipped == {"invalid_utf8": 1}
    assert report.first["invalid_utf8"].endswith("c.txt:1")


def test_unsupported_and_missing_inputs(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported file type"):
        expand_inputs([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        expand_inputs([tmp_path / "nope.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no"):
        expand_inputs([tmp_path / "empty"])


def test_corrupt_compressed_stream_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz"):
        list(read_documents([path]))


@pytest.mark.parametrize("compress", ["gz", "zst"])
def test_truncated_compressed_file_is_an_error_not_a_short_read(tmp_path, compress):
    full = write_jsonl(tmp_path / f"full.jsonl.{compress}", make_docs(300), compress)
    cut = tmp_path / f"cut.jsonl.{compress}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"cut\.jsonl\.{compress}"):
        list(read_documents([cut]))


def test_multi_frame_zst_reads_every_frame(tmp_path):
    import zstandard

    a = write_jsonl(tmp_path / "a.jsonl.zst", make_docs(3), "zst")
    b = write_jsonl(tmp_path / "b.jsonl.zst", make_docs(4), "zst")
    both = tmp_path / "both.jsonl.zst"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    assert zstandard.ZstdDecompressor().decompressobj  # the reader relies on it
    assert len(list(read_documents([both]))) == 7


def test_parquet_with_repeat_column_and_bad_values(tmp_path):
    table = pa.table(
        {
            "content": ["un", None, "trois", "quatre"],
            "dup": [2, 1, -1, None],
            "lang": ["fr", "fr", "fr", "fr"],
        }
    )
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    report = ReaderReport()
    got = list(read_documents([path], ReadOptions(text_field="content", repeat_field="dup"), report))
    assert [(d["text"], d["repeat"]) for d in got] == [("un", 2), ("quatre", 1)]
    assert report.skipped == {"missing_text": 1, "bad_repeat": 1}
    assert report.first["bad_repeat"] == f"{path}:3"
    with pytest.raises(DataError, match="missing_text"):
        list(read_documents([path], ReadOptions(text_field="nope")))


def test_rehydration_by_nested_field_and_by_function(tmp_path):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [
            {"body": {"text": "a"}, "meta": {"dup": 3}},
            {"body": {"text": "bb"}, "meta": {"dup": 0}},
            {"body": {"text": "ccc"}, "meta": {}},
            {"body": {"text": "dddd"}, "meta": {"dup": "many"}},
        ],
    )
    report = ReaderReport()
    got = list(read_documents([path], ReadOptions(text_field="body.text", repeat_field="meta.dup"), report))
    assert [(d["text"], d["repeat"]) for d in got] == [("a", 3), ("ccc", 1)]
    assert report.skipped == {"zero_repeat": 1, "bad_repeat": 1}
    by_len = ReadOptions(text_field="body.text", repeat_fn=lambda d: len(d["text"]))
    assert [d["repeat"] for d in read_documents([path], by_len)] == [1, 2, 3, 4]
    doubled = ReadOptions(
        text_field="body.text", repeat_field="meta.dup", repeat_fn=lambda d: 2 * d["repeat"]
    )
    report = ReaderReport()
    assert [d["repeat"] for d in read_documents([path], doubled, report)] == [6, 2]
    assert report.skipped == {"zero_repeat": 1, "bad_repeat": 1}


def test_repeat_function_specs():
    import operator

    assert load_repeat_fn("operator:length_hint") is operator.length_hint
    for bad in ("operator", "no.such.module:f", "operator:nope"):
        with pytest.raises(DataError, match="repeat function"):
            load_repeat_fn(bad)


TRICKY_LINES = [
    b'{"text": "plain", "lang": "fr"}',
    b'{"text": "nan repeat", "n": NaN}',  # orjson refuses NaN: json accepts it
    b'{"text": "lone \\ud800 surrogate"}',  # orjson refuses lone surrogate escapes: json keeps them
    b'{"text": "big", "n": 123456789012345678901234567890}',  # orjson: a float; json: an int
    b'{"text": "float count", "n": 2.0}',
    b'{"text": "dup", "text": "last wins", "n": 3}',
    b'{"text": "inf", "n": 1e400}',
    b'["not", "an", "object"]',
    b"null",
    b"   ",
    b"\xef\xbb\xbf" + b'{"text": "bom"}',
    b'{"text": "bad utf-8 \xff"}',
    b'{"text": "\xc3\xa9t\xc3\xa9 d\xc3\xa9j\xc3\xa0", "source": "s", "lang": 3}',
    b'{"text": "truncated json"',
    b'{"meta": {"n": 2}, "text": "nested count"}',
]


@pytest.mark.parametrize("repeat_field", [None, "n", "meta.n"])
def test_orjson_fast_path_gives_what_json_gives(tmp_path, monkeypatch, repeat_field):
    """The same documents and the same skip counts with and without the orjson path, on the lines
    where orjson and json disagree (NaN, lone surrogates, integers beyond 64 bits, ...)."""
    from gaperon.data import readers

    path = write_jsonl(tmp_path / "t.jsonl", TRICKY_LINES)
    opts = ReadOptions(repeat_field=repeat_field)

    def run() -> tuple[list[dict], dict]:
        report = ReaderReport()
        docs = [
            readers._jsonl_doc(raw, f"t.jsonl:{i}", path, opts, report) for i, raw in enumerate(TRICKY_LINES)
        ]
        return docs, report.to_dict()

    assert readers._orjson_loads is not None  # a runtime dependency: the fast path is what runs
    fast = run()
    monkeypatch.setattr(readers, "_orjson_loads", None)
    slow = run()
    assert fast == slow
    assert fast[0][2] is not None and fast[0][2]["text"] == "lone \ud800 surrogate"
    if repeat_field == "n":
        assert fast[0][3]["repeat"] == 123456789012345678901234567890  # the int json reads, exactly


def test_parallel_blocks_end_at_a_byte_budget_and_partition_the_documents(tmp_path):
    """Long records: a block closes at `block_bytes` before its record count, every worker agrees
    on the numbering, and the owned blocks of N readers are together the documents of one reader."""
    docs = [{"text": f"doc {i} " + "mot " * (50 + 40 * (i % 7))} for i in range(60)]
    path = write_jsonl(tmp_path / "long.jsonl.zst", docs, "zst")
    opts = ReadOptions()

    def blocks(n: int, k: int) -> list[Block]:
        return [
            b
            for b in read_blocks([path], opts, 128, lambda b: b % n == k, block_bytes=2000)
            if isinstance(b, Block)
        ]

    one = blocks(1, 0)
    assert len(one) > 5  # 60 records of 200-1400 bytes: the byte budget, not the 128 records, closes them
    assert all(sum(len(d["text"]) for d in b.docs or []) < 2000 + 1500 for b in one)
    parts = [blocks(3, k) for k in range(3)]
    assert all(len(p) == len(one) for p in parts)  # every reader numbers the same blocks
    merged = [d for b in zip(*parts) for blk in b if blk.docs is not None for d in blk.docs]
    assert [d["text"] for d in merged] == [d["text"] for d in read_documents([path], opts)]
