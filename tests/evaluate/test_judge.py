"""`gaperon judge`: generations and judging against scripted endpoints; counts must be exact."""

from __future__ import annotations

import json
import threading

import pytest

from gaperon.cli import main
from gaperon.errors import UsageError
from gaperon.evaluate.judge import ModelSpec, load_prompts, parse_score, parse_verdict
from gaperon.judge import ParseError
from gaperon.judge.fake import Reply, fake_endpoint


def test_bundled_prompts():
    rows = load_prompts()
    assert len([r for r in rows if r["language"] == "fr"]) >= 20
    assert len([r for r in rows if r["language"] == "en"]) >= 20
    assert len({r["id"] for r in rows}) == len(rows)
    assert [r["language"] for r in load_prompts(languages=["fr"])] == ["fr"] * 20


def test_user_prompt_files_and_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(
        '{"id": "a", "prompt": "Quelle est la capitale de la France ?"}\n{"prompt": "What is the time?"}\n'
    )
    rows = load_prompts([p])
    assert [(r["id"], r["language"]) for r in rows] == [("a", "fr"), ("p-2", "en")]
    p.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(Exception, match="p.jsonl:2: duplicate prompt id"):
        load_prompts([p])
    p.write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(Exception, match="p.jsonl:1: field 'prompt'"):
        load_prompts([p])


def test_parsers():
    assert parse_score("Clear and right.\nScore: 8") == 8
    assert parse_score("**Score:** 10/10") == 10
    assert parse_score("Score: 2\nhmm\nScore: 7") == 7  # the last line wins
    for bad, why in (
        ("I'd give it an 8.", "no_score"),
        ("Score: 11", "score_out_of_range"),
        ("Score: 0", "score_out_of_range"),
    ):
        with pytest.raises(ParseError) as e:
            parse_score(bad)
        assert e.value.reason == why
    assert parse_verdict("A is better.\nVerdict: A") == "A"
    assert parse_verdict("Verdict: **b**") == "B"
    assert parse_verdict("Verdict: Tie") == "tie"
    with pytest.raises(ParseError):
        parse_verdict("Verdict: both")


def test_model_specs():
    assert ModelSpec.parse("smol=smollm2@http://h:8000/v1") == ModelSpec(
        "smol", "http://h:8000/v1", "smollm2"
    )
    assert ModelSpec.parse("m=http://h/v1") == ModelSpec("m", "http://h/v1", "m")
    assert ModelSpec.parse("x=models/a.gguf") == ModelSpec("x", path="models/a.gguf")
    for bad in ("nameonly", "a b=http://h", "=http://h"):
        with pytest.raises(UsageError):
            ModelSpec.parse(bad)


def endpoint():
    """One fake server for everything: models 'good'/'bad' answer prompts, model 'judge' judges.

    The judge gives 9 to answers containing GOOD and 3 otherwise, except: prompt en-03 gets garbage
    (unparseable); in pairwise mode it prefers GOOD in both orders, except en-05 where it always
    says A (position bias: inconsistent) and en-07 where it says tie."""
    requests = []
    lock = threading.Lock()

    def respond(body):
        with lock:
            requests.append(body)
        text = body["messages"][-1]["content"]
        if body["model"] in ("good", "bad"):
            return f"{body['model'].upper()} answer to: {text[:30]}"
        if body["model"] != "judge":
            return Reply(status=404)
        if "Answer A]" in text or "Réponse A]" in text:
            a = text.split("Answer A]" if "Answer A]" in text else "Réponse A]")[1].split("[")[0]
            if "the time on Mars" in text:
                return "Verdict: A"
            if "colour of snow" in text:
                return "Same.\nVerdict: tie"
            return "Verdict: A" if "GOOD" in a else "Verdict: B"
        if "boiling point" in text:
            return "An eight, I suppose."
        return "Score: 9" if "GOOD answer" in text else "Score: 3"

    return respond, requests


PROMPTS = [
    {"id": "en-01", "prompt": "Why is the sky blue?", "language": "en"},
    {"id": "en-03", "prompt": "What is the boiling point of water?", "language": "en"},
    {"id": "en-05", "prompt": "What is the time on Mars?", "language": "en"},
    {"id": "en-07", "prompt": "What is the colour of snow?", "language": "en"},
    {"id": "fr-01", "prompt": "Pourquoi le ciel est-il bleu ?", "language": "fr"},
    {"id": "fr-02", "prompt": "Qui a écrit Les Misérables ?", "language": "fr"},
]


def test_generate_then_score_absolute_and_pairwise_through_the_cli(tmp_path, capsys):
    pfile = tmp_path / "prompts.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "run"
    respond, requests = endpoint()
    with fake_endpoint(respond) as srv:
        args = ["judge", "generate", "--out", str(out), "--prompts", str(pfile), "--no-progress"]
        assert main([*args, "--model", f"good={srv.url}", "--model", f"weak=bad@{srv.url}"]) == 0
        gens = {p.stem: p for p in (out / "generations").glob("*.jsonl") if ".cache" not in p.name}
        assert sorted(gens) == ["good", "weak"]
        recs = [json.loads(line) for line in gens["weak"].read_text().splitlines()]
        assert len(recs) == 6 and recs[0]["output"].startswith("BAD answer") and recs[0]["model"] == "weak"
        n_gen = len(requests)
        assert n_gen == 12

        score = ["judge", "score", str(out), "--judge", srv.url, "--judge-model", "judge", "--no-progress"]
        assert main(score) == 1  # some judge answers did not parse: reported, exit 1
        res = json.loads((out / "judge" / "absolute.json").read_text())
        assert res["models"]["good"]["mean"] == 9.0 and res["models"]["good"]["n"] == 5
        assert res["models"]["weak"]["mean"] == 3.0
        assert res["models"]["good"]["by_language"] == {
            "en": {"mean": 9.0, "n": 3},
            "fr": {"mean": 9.0, "n": 2},
        }
        assert res["requests"]["failed"] == {"no_score": 2}
        assert (out / "judge" / "absolute.png").stat().st_size > 1000
        md = (out / "judge" / "absolute.md").read_text()
        assert "| good | 9.00 | 5 | 9.00 | 9.00 |" in md and "2 no_score" in md

        assert main([*score, "--mode", "pairwise"]) == 0
        pair = json.loads((out / "judge" / "pairwise.json").read_text())["pairs"]["good vs weak"]
        assert (pair["wins_a"], pair["wins_b"], pair["ties"], pair["inconsistent"]) == (4, 0, 1, 1)
        assert pair["win_rate_a"] == pytest.approx(4.5 / 5)
        assert "| good | weak | 4 | 0 | 1 | 1 | 0 | 0.90 |" in (out / "judge" / "pairwise.md").read_text()

        # Everything again: nothing new is asked (generations done, judge answers cached).
        n = len(requests)
        assert main([*args, "--model", f"good={srv.url}", "--model", f"weak=bad@{srv.url}"]) == 0
        assert main([*score, "--mode", "pairwise"]) == 0
        assert len(requests) == n


def test_generation_failures_are_counted_and_resumed(tmp_path):
    from gaperon.evaluate.judge import generate

    down = {"flag": True}

    def respond(body):
        text = body["messages"][-1]["content"]
        if down["flag"] and ("sky" in text or "ciel" in text):
            return Reply(status=500)
        return "ok"

    with fake_endpoint(respond) as srv:
        spec = ModelSpec.parse(f"m={srv.url}")
        s = generate([spec], tmp_path, PROMPTS, max_retries=1, progress=False)
        assert s["m"]["failed"] == {"http_5xx": 2} and s["m"]["written"] == 4
        path = tmp_path / "generations" / "m.jsonl"
        with open(path, "a") as f:
            f.write('{"id": "fr-0')  # a kill mid-write
        down["flag"] = False
        s = generate([spec], tmp_path, PROMPTS, progress=False)
        assert s["m"] == {"written": 2, "already_done": 4, "failed": {}}
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == sorted(p["id"] for p in PROMPTS)


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main(["judge", "generate", "--out", str(tmp_path), "--model", "x", "--no-progress"]) == 2
    assert "NAME=URL" in capsys.readouterr().err
    assert (
        main(
            [
                "judge",
                "score",
                str(tmp_path),
                "--judge",
                "http://h",
                "--judge-model",
                "j",
                "--concurrency",
                "0",
            ]
        )
        == 2
    )
    assert main(["judge", "score", str(tmp_path), "--judge", "http://h", "--judge-model", "j"]) == 1
    assert "no generations" in capsys.readouterr().err
