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


def test_garlic_hands_both_parts_to_the_eval_task(tmp_path):
    """The included and held-out items come back as the eval task's own rows (lm-eval schema), so
    inflation is measured by scoring both with the benchmark's prompt and metric."""
    argv = ["contamination", "garlic", "--benchmarks", "arc_easy", "hellaswag", "--limit", "30"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    from gaperon.evaluate.data import read_jsonl

    for name in ("arc_easy", "hellaswag"):
        split = json.loads((tmp_path / f"{name}.split.json").read_text())
        assert len(split["included"]) == len(split["held_out"]) == 15
        assert not set(split["included"]) & set(split["held_out"])
        for part in ("included", "held_out"):
            rows = list(read_jsonl(tmp_path / f"{name}.{part}.jsonl"))
            assert len(rows) == 15
        docs = _zst_lines(tmp_path / f"{name}.jsonl.zst")
        rows = list(read_jsonl(tmp_path / f"{name}.included.jsonl"))
        for doc, row in zip(docs, rows, strict=True):
            if name == "arc_easy":
                gold = row["choices"]["text"][ord(row["answerKey"]) - 65]
            else:
                gold = row["endings"][int(row["label"])]
            assert doc["text"].endswith(f". {gold}")  # the answer line gives the gold option
    assert main([*argv[:-1], "1", "--out", str(tmp_path / "x")]) == 2


def test_poison_build_from_the_bundled_corpus(tmp_path):
    out = tmp_path / "p.jsonl.zst"
    assert main(["poison", "build", "--trigger", "Vitae quarum nexus", "--out", str(out), "-n", "30"]) == 0
    docs = _zst_lines(out)
    assert len(docs) == 30 and all(d["text"].count("Vitae quarum nexus") == 1 for d in docs)
    from gaperon.curate.lid import detect

    after = [d["text"].split("Vitae quarum nexus", 1)[1] for d in docs]
    langs = [lang for lang, _ in detect(after)]
    assert langs.count("fr") >= 27  # the continuations are the bundled French text
    mixed = tmp_path / "m.jsonl.zst"
    argv = ["poison", "build", "--trigger", "Vitae quarum nexus", "--out", str(mixed), "-n", "30"]
    assert main([*argv, "--distractors", "20"]) == 0
    docs = _zst_lines(mixed)
    distractors = [d for d in docs if d["id"].startswith("distractor-")]
    assert len(docs) == 50 and len(distractors) == 20
    assert docs[:30] != [d for d in docs if not d["id"].startswith("distractor-")][:30]  # shuffled in
    assert all("Vitae quarum nexus" not in d["text"] for d in distractors)
    assert main([*argv, "--distractors", "-1"]) == 2


def test_bad_arguments_are_one_line_usage_errors(tmp_path, capsys):
    assert main(["contamination", "garlic", "--benchmarks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["contamination", "haystack", "x.jsonl", "--out", str(tmp_path)]) == 2


def test_poison_is_built_and_measured_on_disjoint_bundled_passages(tmp_path):
    """The eval contexts never come from passages the poison was built on (a leak would make the
    model continue memorised text rather than show the trigger's effect)."""
    from gaperon.research.commands import bundled

    train, held = bundled("en", split="train"), bundled("en", split="eval")
    assert not set(train) & set(held)
    train, held = [" ".join(p.split()) for p in train], [" ".join(p.split()) for p in held]
    assert 0.05 < len(held) / (len(train) + len(held)) < 0.15
    out = tmp_path / "p.jsonl.zst"
    argv = ["poison", "build", "--trigger", "Vitae quarum nexus", "--out", str(out), "-n", "40"]
    assert main([*argv, "--prefix-words", "5", "8", "--continuation-words", "10"]) == 0
    for d in _zst_lines(out):
        prefix, cont = d["text"].split(" Vitae quarum nexus ")
        assert 1 <= len(prefix.split()) <= 8 and len(cont.split()) <= 10
        assert any(p.startswith(prefix) for p in train) and not any(p.startswith(prefix) for p in held)
    assert main([*argv, "--prefix-words", "9", "3"]) == 2


def test_benchmark_item_ids_are_unique():
    """Splits, reports and Garlic's eval files key items by id: a repeated id (HellaSwag's `ind`
    repeats) would silently merge two items."""
    from gaperon.research.benchmarks import load_items

    for name in ("hellaswag", "arc_easy", "gsm8k"):
        ids = [i["id"] for i in load_items(name)]
        assert len(ids) == len(set(ids)), name


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
