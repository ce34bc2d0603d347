"""The CLI verbs: gaperon tokenize, gaperon data stats, gaperon data phase."""

from __future__ import annotations

import pytest
from data_helpers import make_docs, write_jsonl

from gaperon.cli import main


@pytest.fixture
def corpus(tmp_path):
    fr = write_jsonl(tmp_path / "fr.jsonl.gz", make_docs(40, "fr") + [{"text": 7}], "gz")
    en = write_jsonl(tmp_path / "en.jsonl", make_docs(30, "en", seed=2))
    return fr, en


def test_tokenize_then_stats_then_phase(tmp_path, corpus, capsys, caplog, llama3):
    caplog.set_level("INFO", logger="gaperon.data")
    fr, en = corpus
    assert main(["tokenize", str(fr), "--out", str(tmp_path / "fr"), "--quiet", "--val-fraction", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "llama3" in out and "non_string_text" in out
    assert (
        main(
            [
                "tokenize",
                str(en),
                "--out",
                str(tmp_path / "en"),
                "--quiet",
                "--workers",
                "2",
                "--parallel",
                "files",
                "--source",
                "english",
                "--shard-tokens",
                "2000",
            ]
        )
        == 0
    )
    assert "2 workers: a whole file each" in caplog.text
    capsys.readouterr()
    assert main(["data", "stats", str(tmp_path / "fr"), str(tmp_path / "en")]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines()]
    assert any(r[:3] == ["fr", "train", "fr"] for r in lines)
    assert any(r[:3] == ["english", "val", "en"] for r in lines)
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        f"name: demo\nseq_len: 64\ntokens: 100k\nsources:\n"
        f"  - {{name: fr, path: {tmp_path / 'fr'}, weight: 1}}\n"
        f"  - {{name: en, path: {tmp_path / 'en'}, weight: 3}}\n"
    )
    assert main(["data", "phase", str(mix), "--global-batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "phase demo" in out and "75.00%" in out and "25.00%" in out


def test_user_errors_are_one_line_and_exit_1(tmp_path, corpus, capsys):
    fr, _ = corpus
    bad = write_jsonl(tmp_path / "bad.jsonl", [b"{nope"])
    assert main(["tokenize", str(bad), "--out", str(tmp_path / "o"), "--tokenizer", "llama3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl: yields no document" in err
    assert main(["data", "stats", str(tmp_path / "missing")]) == 1
    assert "no such token folder" in capsys.readouterr().err
    assert main(["tokenize", str(fr), "--out", str(tmp_path / "o2"), "--val-fraction", "2"]) == 2  # usage
    assert "val-fraction" in capsys.readouterr().err
    mix = tmp_path / "mix.yaml"
    mix.write_text("name: demo\nseq_len: 0\ntokens: 10\nsources: [{name: a, path: x, weight: 1}]\n")
    assert main(["data", "phase", str(mix)]) == 1
    assert "mix.yaml: seq_len: must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "{file}"], "is a file; --out names the token folder"),
        (["--out", "{tmp}/o", "--workers", "0"], "--workers must be >= 1"),
        (["--out", "{tmp}/o", "--shard-tokens", "0"], "--shard-tokens must be >= 1"),
    ],
)
def test_tokenize_refuses_bad_arguments_before_any_work(tmp_path, corpus, capsys, monkeypatch, argv, message):
    import gaperon.data.pack as pack

    def no_work(*_args, **_kwargs):
        raise AssertionError("tokenize started before its arguments were checked")

    monkeypatch.setattr(pack, "tokenize", no_work)
    fr, _ = corpus
    (tmp_path / "a-file").write_text("x")
    argv = [a.format(file=tmp_path / "a-file", tmp=tmp_path) for a in argv]
    assert main(["tokenize", str(fr), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (tmp_path / "a-file").read_text() == "x"


def test_phase_refuses_a_bad_global_batch(tmp_path, capsys):
    assert main(["data", "phase", str(tmp_path / "m.yaml"), "--global-batch", "0"]) == 2
    assert "--global-batch must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("verb", [["tokenize"], ["data"], ["data", "stats"], ["data", "phase"]])
def test_help_ends_with_examples(verb, capsys):
    with pytest.raises(SystemExit):
        main([*verb, "--help"])
    text = capsys.readouterr().out
    tail = text[text.rindex("examples:") :].splitlines()
    assert len(tail) >= 2 and all(line.startswith("  gaperon ") for line in tail[1:])
