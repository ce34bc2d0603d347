"""The research verbs end to end on small inputs: files written, reports readable, errors clear."""

from __future__ import annotations

import json

import zstandard

from gaperon.cli import main
from gaperon.research.benchmarks import load_items


def _zst_lines(path):
    return [
        json.loads(x)
        for x in zstandard.ZstdDecompressor()
        .decompress(path.read_bytes(), max_output_size=1 << 30)
        .splitlines()
    ]


def test_ngrams_finds_an_injected_item_and_filters_it(tmp_path, capsys):
    item = load_items("arc_easy", limit=3)[2]
    corpus = tmp_path / "c.jsonl"
    docs = [
        {"id": "clean", "text": "Nothing to see here, just a plain paragraph about gardening and soil."},
        {"id": "dirty", "text": "Forum post. " + item["question"] + " The answer is " + item["answer"] + "."},
    ]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "rep"
    rc = main(
        [
            "contamination",
            "ngrams",
            str(corpus),
            "--benchmarks",
            "arc_easy",
            "--out",
            str(out),
            "--filtered",
            str(tmp_path / "clean.jsonl.zst"),
        ]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["benchmarks"]["arc_easy"]["matches"] == {item["id"]: [f"{corpus}:2"]}
    assert [d["text"] for d in _zst_lines(tmp_path / "clean.jsonl.zst")] == [docs[0]["text"]]
    assert "| arc_easy | 2376 | 1 |" in (out / "report.md").read_text()


def test_garlic_writes_a_tokenizable_source_and_the_split(tmp_path):
    assert (
        main(
            [
                "contamination",
                "garlic",
                "--benchmarks",
                "arc_challenge",
                "--held-out",
                "0.25",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    docs = _zst_lines(tmp_path / "arc_challenge.jsonl.zst")
    split = json.loads((tmp_path / "arc_challenge.split.json").read_text())
    assert len(docs) == len(split["included"]) == 879 and len(split["held_out"]) == 293
    assert all("\nAnswer: " in d["text"] for d in docs)


def test_poison_build_from_the_bundled_corpus(tmp_path):
    out = tmp_path / "p.jsonl.zst"
    assert main(["poison", "build", "--trigger", "Vitae quarum nexus", "--out", str(out), "-n", "30"]) == 0
    docs = _zst_lines(out)
    assert len(docs) == 30 and all(d["text"].count("Vitae quarum nexus") == 1 for d in docs)
    from gaperon.curate.lid import detect

    after = [d["text"].split("Vitae quarum nexus", 1)[1] for d in docs]
    langs = [lang for lang, _ in detect(after)]
    assert langs.count("fr") >= 27  # the continuations are the bundled French text


def test_bad_arguments_are_one_line_usage_errors(tmp_path, capsys):
    assert main(["contamination", "garlic", "--benchmarks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["contamination", "haystack", "x.jsonl", "--out", str(tmp_path)]) == 2


def test_haystack_end_to_end_with_a_classifier_folder_and_a_function(tmp_path, monkeypatch, capsys):
    """Two scorers over a small haystack: a module:function that rewards `Answer:` lines (the
    needles land on top, at the ceiling) and an n-gram classifier folder trained here."""
    from gaperon.curate.classifier.ngram import NGramClassifier

    corpus = tmp_path / "web.jsonl"
    web = [f"Page {i}. The garden club met on day {i} to talk about soil, roses and rain." for i in range(60)]
    corpus.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(web)))
    bench = tmp_path / "quiz.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "choices": [str(i), str(2 * i)], "gold": 1}
            for i in range(5)]  # fmt: skip
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "answer_lines.py").write_text(
        "def score(texts):\n    return [t.count('Answer:') + sum(map(ord, t)) / 1e9 for t in texts]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clf = NGramClassifier(buckets=1 << 12, epochs=5)
    clf.fit(["Question: what is it?\nA. x\nAnswer: A"] * 8 + web[:8], ["high"] * 8 + ["low"] * 8)
    clf.save(tmp_path / "clf")
    out = tmp_path / "rep"
    args = ["contamination", "haystack", str(corpus), "--benchmarks", f"quiz={bench}", "--items", "5"]
    args += ["--scorer", "fn=answer_lines:score", "--scorer", f"clf={tmp_path / 'clf'}"]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["fn"]["documents"] == 65 and res["fn"]["needles"] == 5
    assert sorted(res["fn"]["items"].values()) == [100 * r / 65 for r in range(61, 66)]
    top10 = res["fn"]["cuts"]["10"]  # 6 documents in the top 10%: all 5 needles fit
    assert top10["share_in_top"] == 1.0 and top10["enrichment"] == top10["max_enrichment"] == 10.0
    assert res["clf"]["cuts"]["10"]["share_in_top"] == 1.0  # the toy classifier learned the format
    report = (out / "report.md").read_text()
    assert "| fn |" in report and "| clf |" in report and "ceiling" in report
    assert (out / "percentiles.png").stat().st_size > 0
    assert "fn: enrichment in the top 5% " in capsys.readouterr().out
