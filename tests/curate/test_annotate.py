"""LLM-judge annotation against a scripted endpoint: prompts per language, strict parsing, resume."""

from __future__ import annotations

import json
import threading

import pytest

from gaperon.curate.annotate import annotate, build_messages, guess_language, parse_annotation
from gaperon.errors import DataError
from gaperon.judge import ParseError
from gaperon.judge.fake import Reply, fake_endpoint

FR = "Le chat est sur la table et il dort dans la cuisine pour la journée. C'est une belle maison."
EN = "The cat is on the table and it sleeps in the kitchen for the whole day. This is a nice house."


def write_jsonl(path, rows, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def docs(n):
    return [{"id": f"d{i}", "text": (FR if i % 2 else EN) + f" Document {i}."} for i in range(n)]


def judge(fail=frozenset(), garbage=frozenset()):
    """Answers 'high' to French prompts, 'medium' to English ones; scripted failures by doc number."""
    seen = []
    lock = threading.Lock()

    def respond(body):
        prompt = body["messages"][0]["content"]
        with lock:
            seen.append(prompt)
        doc = prompt.split("Document ")[-1].split(".")[0]
        if doc in fail:
            return Reply(status=503)
        if doc in garbage:
            return "This document looks pretty good to me!"
        if prompt.startswith("Vous évaluez"):
            return "label: high\nreason: Texte clair et correct."
        return "Label: **medium**\nReason: Fine but shallow."

    return respond, seen


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_parse_annotation_is_strict():
    assert parse_annotation("label: high\nreason: good") == ("high", "good")
    assert parse_annotation("  LABEL : Low \nRaison : mauvais") == ("low", "mauvais")
    for bad, why in [
        ("high", "no_label"),
        ("label: excellent\nreason: x", "no_label"),
        ("label: high\nlabel: low\nreason: x", "ambiguous_label"),
        ("label: medium", "no_reason"),
    ]:
        with pytest.raises(ParseError) as e:
            parse_annotation(bad)
        assert e.value.reason == why


def test_language_picks_the_prompt():
    assert guess_language(FR) == "fr" and guess_language(EN) == "en"
    fr = build_messages(FR, "fr")[0]["content"]
    en = build_messages(EN, "en")[0]["content"]
    assert fr.startswith("Vous évaluez") and FR in fr
    assert en.startswith("You are rating") and EN in en
    for prompt in (fr, en):  # the six criteria, and not educational value as a criterion
        assert prompt.count("\n1. ") == 1 and "\n6. " in prompt
    long = build_messages("mot " * 5000, "fr", max_chars=1000)[0]["content"]
    assert len(long) < len(fr) + 1200


def test_labels_every_document_and_counts_bad_input(tmp_path):
    rows = docs(6) + [{"id": "x1", "text": ""}, {"id": "x2"}, {"id": "d0", "text": EN}]
    src = write_jsonl(tmp_path / "in.jsonl", rows, extra_lines=["{broken json", "[1, 2]"])
    respond, seen = judge()
    with fake_endpoint(respond) as srv:
        rep = annotate([src], tmp_path / "out.jsonl", endpoint=srv.url, model="m", progress=False)
    out = read(tmp_path / "out.jsonl")
    assert rep.done == 6 and rep.failed == {} and len(seen) == 6
    assert rep.read_skipped == {
        "empty_text": 1,
        "missing_text": 1,
        "duplicate_id": 1,
        "bad_json": 1,
        "not_an_object": 1,
    }
    assert "in.jsonl:10" in rep.first_read_error["bad_json"]
    by_id = {r["id"]: r for r in out}
    assert set(by_id) == {f"d{i}" for i in range(6)}
    for i in range(6):
        r = by_id[f"d{i}"]
        assert set(r) == {"id", "text", "language", "label", "reason"}
        assert r["text"] == rows[i]["text"]
        assert (r["language"], r["label"]) == (("fr", "high") if i % 2 else ("en", "medium"))
    assert rep.labels == {"high": 3, "medium": 3}


def test_failures_are_counted_and_a_rerun_finishes_without_reasking(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", docs(8))
    out = tmp_path / "out.jsonl"
    respond, seen = judge(fail={"2", "5"}, garbage={"3"})
    with fake_endpoint(respond) as srv:
        rep = annotate([src], out, endpoint=srv.url, model="m", max_retries=1, progress=False)
    assert rep.done == 5 and rep.failed == {"http_5xx": 2, "no_label": 1}
    assert {r["id"] for r in read(out)} == {"d0", "d1", "d4", "d6", "d7"}
    # Simulate a kill in the middle of writing the next record.
    with open(out, "a") as f:
        f.write('{"id": "d2", "text": "Le ch')
    respond, seen = judge()  # the endpoint is healthy again
    with fake_endpoint(respond) as srv:
        rep2 = annotate([src], out, endpoint=srv.url, model="m", progress=False)
    # d3's garbage answer is in the answer cache: still counted as unparseable, not re-asked.
    assert rep2.skipped_cached == 5 and rep2.done == 2 and rep2.failed == {"no_label": 1}
    assert len(seen) == 2
    ids = [r["id"] for r in read(out)]
    assert sorted(ids) == ["d0", "d1", "d2", "d4", "d5", "d6", "d7"] and len(ids) == len(set(ids))


def test_zst_parquet_fields_and_limit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"doc": FR, "uid": 1, "lang": "fr_FR"}, {"doc": EN, "uid": 2, "lang": None}]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    pq.write_table(
        pa.Table.from_pylist([{"doc": EN + " More.", "uid": 3, "lang": "en"}]), tmp_path / "b.parquet"
    )
    respond, _ = judge()
    with fake_endpoint(respond) as srv:
        rep = annotate(
            [tmp_path / "a.jsonl.zst", tmp_path / "b.parquet"],
            tmp_path / "o.jsonl",
            endpoint=srv.url,
            model="m",
            text_field="doc",
            id_field="uid",
            language_field="lang",
            progress=False,
        )
        assert rep.done == 3
        got = {r["id"]: r["language"] for r in read(tmp_path / "o.jsonl")}
        assert got == {"1": "fr", "2": "en", "3": "en"}
        rep = annotate(
            [tmp_path / "a.jsonl.zst"],
            tmp_path / "lim.jsonl",
            endpoint=srv.url,
            model="m",
            text_field="doc",
            id_field="uid",
            limit=1,
            progress=False,
        )
        assert rep.done == 1


def test_an_input_without_any_document_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "body": "x"}])
    with pytest.raises(DataError, match="no usable document"):
        annotate([src], tmp_path / "o.jsonl", endpoint="http://127.0.0.1:9", model="m", progress=False)
