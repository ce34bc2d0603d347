"""tokenize's account of skipped records: one total that adds up, --max-skip-ratio, the resume line."""

from __future__ import annotations

import logging
import re

import pytest
from data_helpers import ByteTokenizer, make_docs, write_jsonl

from gaperon.cli import main
from gaperon.data.pack import TokenizeOptions, tokenize
from gaperon.data.readers import DataError
from gaperon.data.shards import load_manifest

BAD = [b"{nope", b"[1, 2]", {"text": ""}, {"text": 7}, b"{also bad"]  # 5 skipped records


def _corpus(tmp_path, n_good: int = 45):
    return write_jsonl(tmp_path / "in.jsonl", make_docs(n_good)[:20] + BAD + make_docs(n_good)[20:])


def _bins(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.bin"))}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_skip_ratio_above_the_limit_fails_and_keeps_what_was_written(tmp_path, workers):
    src = _corpus(tmp_path)  # 5 of 50 records are skipped: 10%
    opts = TokenizeOptions(tokenizer=ByteTokenizer(), shard_tokens=3000, val_fraction=0.1, workers=workers)
    ref = tokenize([src], tmp_path / "ref", opts, progress=False)
    assert ref["reader"]["documents"] == 45 and sum(ref["reader"]["skipped"].values()) == 5

    out = tmp_path / "out"
    opts.max_skip_ratio = 0.05
    with pytest.raises(DataError) as e:
        tokenize([src], out, opts, progress=False)
    msg = str(e.value)
    assert f"The {len(_bins(out))} shard(s) written are kept" in msg
    assert "skipped 5 of 50 records" in msg and "10.0%" in msg and "--max-skip-ratio 0.05" in msg
    assert "2 malformed_json" in msg and "1 empty_text" in msg
    with pytest.raises(DataError, match="not finished"):
        load_manifest(out)  # no manifest: nothing claims to be complete ...
    written = {p: (out / p).stat().st_mtime_ns for p in _bins(out)}
    assert written and _bins(out) == {p: b for p, b in _bins(tmp_path / "ref").items() if p in written}

    opts.max_skip_ratio = 0.2  # ... and a rerun with a higher limit finishes without rewriting them
    m = tokenize([src], out, opts, progress=False)
    assert _bins(out) == _bins(tmp_path / "ref") and m["splits"] == ref["splits"]
    assert {p: (out / p).stat().st_mtime_ns for p in written} == written
    written_all = _bins(out)
    opts.max_skip_ratio = 0.0  # a finished folder is checked too (nothing to lose there)
    with pytest.raises(DataError, match=f"skipped 5 of 50 .* The {len(written_all)} shard"):
        tokenize([src], out, opts, progress=False)


def test_the_skipped_total_is_the_sum_of_its_reasons(tmp_path, capsys, llama3):
    src = _corpus(tmp_path)
    out = tmp_path / "out"
    # --max-chars 60 truncates long documents: they are kept, so they are not in the skipped total
    assert (
        main(
            ["tokenize", str(src), "--out", str(out), "--quiet", "--tokenizer", "llama3", "--max-chars", "60"]
        )
        == 0
    )
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("#   skipped"))
    total = int(re.search(r"skipped (\d+) of (\d+) records", line).group(1))
    reasons = re.findall(r"(\d+) ([a-z_]+) \(first at", line.split(";")[0])
    assert total == 5 and sum(int(n) for n, _ in reasons) == total and "truncated" in line
    assert {why for _, why in reasons} == {"malformed_json", "not_an_object", "empty_text", "non_string_text"}


def test_a_resumed_run_says_so(tmp_path, caplog):
    src = _corpus(tmp_path)
    opts = TokenizeOptions(tokenizer=ByteTokenizer(), shard_tokens=3000, val_fraction=0.1)
    seen = []

    def crash(_split, shard):
        seen.append(shard)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tokenize([src], tmp_path / "out", opts, progress=False, on_shard=crash)
    with caplog.at_level(logging.INFO, logger="gaperon.data.pack"):
        tokenize([src], tmp_path / "out", opts, progress=False)
    resumed = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    docs = sum(s["documents"] for s in seen)
    assert (
        len(resumed) == 1 and "kept 2 finished shard(s)" in resumed[0] and f"{docs} documents" in resumed[0]
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gaperon.data.pack"):
        tokenize([src], tmp_path / "fresh", opts, progress=False)
    assert not [r for r in caplog.records if "resuming" in r.getMessage()]


def test_a_bad_ratio_is_a_usage_error(tmp_path, capsys):
    src = _corpus(tmp_path)
    assert main(["tokenize", str(src), "--out", str(tmp_path / "o"), "--max-skip-ratio", "1.5"]) == 2
    assert "--max-skip-ratio must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
