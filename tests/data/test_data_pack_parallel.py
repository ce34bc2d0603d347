"""`tokenize --workers N` with workers that read their own blocks: byte-identical shards and
manifests (reader report included) whatever N, across file kinds, skips, rehydration and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import ByteTokenizer, make_docs, write_jsonl

from gaperon.data.pack import TokenizeOptions, tokenize
from gaperon.errors import DataError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inputs(tmp: Path) -> list[Path]:
    """Every kind of input, with bad records in the middle and rehydration counts."""
    docs = make_docs(700, seed=1)
    records: list = [{**d, "dup": 1 + i % 3} for i, d in enumerate(docs[:400])]
    records[17] = b"{not json"
    records[260] = b"\xff\xfe broken utf-8"
    records[300] = {"text": "   "}
    records[301] = {"nottext": "x"}
    zst = write_jsonl(tmp / "a.jsonl.zst", records, "zst")
    plain = write_jsonl(tmp / "b.jsonl", docs[400:600])
    table = pa.table({"text": [d["text"] for d in docs[600:]], "dup": [2] * 100})
    pq.write_table(table, tmp / "c.parquet", row_group_size=33)
    folder = tmp / "txt"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"document texte numéro {i} " * (i + 3), encoding="utf-8")
    return [zst, plain, tmp / "c.parquet", folder]


def _run(inputs, out, workers, **kw):
    opts = TokenizeOptions(
        tokenizer=ByteTokenizer(),
        workers=workers,
        shard_tokens=20_000,
        val_fraction=0.1,
        repeat_field="dup",
        **kw,
    )
    return tokenize(inputs, out, opts, progress=False)


@pytest.mark.parametrize("parallel", ["blocks", "files"])
def test_any_worker_count_gives_the_same_bytes_and_report(tmp_path, parallel):
    inputs = _inputs(tmp_path)
    ref = _run(inputs, tmp_path / "w1" / "tok", 1)
    assert ref["reader"]["skipped"] == {
        "empty_text": 1,
        "invalid_utf8": 1,
        "malformed_json": 1,
        "missing_text": 1,
    }
    assert ref["reader"]["first"]["malformed_json"].endswith("a.jsonl.zst:18")
    for workers in (2, 3):
        m = _run(inputs, tmp_path / f"w{workers}" / "tok", workers, parallel=parallel)
        assert m["reader"] == ref["reader"] and m["splits"] == ref["splits"]
        assert _files(tmp_path / f"w{workers}" / "tok") == _files(tmp_path / "w1" / "tok")
    assert len(ref["splits"]["train"]["shards"]) > 3


class Boom(Exception):
    pass


@pytest.mark.parametrize("parallel", ["blocks", "files"])
def test_parallel_run_resumes_into_identical_shards(tmp_path, parallel):
    inputs = _inputs(tmp_path)
    _run(inputs, tmp_path / "ref" / "out", 1)
    seen: list[str] = []

    def crash_after_two(split, shard):
        seen.append(shard["bin"])
        if len(seen) == 2:
            raise Boom

    opts = dict(
        tokenizer=ByteTokenizer(),
        workers=2,
        shard_tokens=20_000,
        val_fraction=0.1,
        repeat_field="dup",
        parallel=parallel,
    )
    out = tmp_path / "out"
    with pytest.raises(Boom):
        tokenize(inputs, out, TokenizeOptions(**opts), progress=False, on_shard=crash_after_two)
    tokenize(inputs, out, TokenizeOptions(**opts), progress=False)
    assert _files(out) == _files(tmp_path / "ref" / "out")


def test_a_corrupt_stream_in_a_worker_is_a_data_error_naming_the_file(tmp_path):
    blob = write_jsonl(tmp_path / "x.jsonl.zst", make_docs(600), "zst")
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) * 2 // 3])
    opts = TokenizeOptions(tokenizer=ByteTokenizer(), workers=2, val_fraction=0.5, shard_tokens=2000)
    with pytest.raises(DataError, match=r"x\.jsonl\.zst"):
        tokenize([blob], tmp_path / "out", opts, progress=False)
    assert not json.loads((tmp_path / "out" / "progress.json").read_text()).get("splits")


@pytest.mark.parametrize("parallel", ["blocks", "files"])
def test_a_failure_before_merging_stops_the_running_workers(tmp_path, parallel):
    """Workers start before the up-front reads (an empty input is found there): the error names the
    file, and no worker is left running behind it."""
    import multiprocessing

    good = write_jsonl(tmp_path / "a.jsonl.zst", make_docs(3000), "zst")
    empty = tmp_path / "b.jsonl"
    empty.write_bytes(b"")
    opts = TokenizeOptions(
        tokenizer=ByteTokenizer(), workers=2, val_fraction=0.5, shard_tokens=2000, parallel=parallel
    )
    with pytest.raises(DataError, match=r"b\.jsonl"):
        tokenize([good, empty], tmp_path / "out", opts, progress=False)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("gaperon-tokenize")]


@pytest.mark.parametrize("parallel", ["blocks", "files"])
def test_forked_workers_reuse_the_loaded_tokenizer(tmp_path, monkeypatch, llama3, parallel):
    """Workers get the main process's tokenizer (its tiktoken Encoding built once, before the fork)
    instead of loading `--tokenizer` again each (seconds for a tokenizer folder, per worker)."""
    import multiprocessing
    import os

    from gaperon.data import workers

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("workers inherit the tokenizer only when forked")
    main, load = os.getpid(), workers.tokenizer_from_spec

    def no_reload_in_workers(spec):
        if os.getpid() != main and isinstance(spec, str | Path):
            raise RuntimeError(f"worker {os.getpid()} loaded tokenizer {spec!r} again")
        return load(spec)

    monkeypatch.setattr(workers, "tokenizer_from_spec", no_reload_in_workers)
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(300, seed=3))
    runs = {
        w: tokenize(
            [src],
            tmp_path / f"w{w}" / "tok",
            TokenizeOptions(tokenizer="llama3", workers=w, shard_tokens=4000, parallel=parallel),
            progress=False,
        )
        for w in (1, 2)
    }
    assert runs[1]["splits"] == runs[2]["splits"]
    assert _files(tmp_path / "w1" / "tok") == _files(tmp_path / "w2" / "tok")


def test_a_file_failing_midway_gives_what_block_mode_gives(tmp_path):
    """A truncated file among others: the same error, naming it, and the same shards written before
    it, whether workers share blocks or whole files (a later good file does not jump the queue)."""
    first = write_jsonl(tmp_path / "a.jsonl.zst", make_docs(300, seed=4), "zst")
    blob = write_jsonl(tmp_path / "b.jsonl.zst", make_docs(600, seed=5), "zst")
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size * 2 // 3])
    last = write_jsonl(tmp_path / "c.jsonl.zst", make_docs(300, seed=6), "zst")
    states = {}
    for parallel in ("blocks", "files"):
        out = tmp_path / parallel
        opts = TokenizeOptions(
            tokenizer=ByteTokenizer(), workers=3, val_fraction=0.2, shard_tokens=3000, parallel=parallel
        )
        with pytest.raises(DataError, match=r"b\.jsonl\.zst"):
            tokenize([first, blob, last], out, opts, progress=False)
        shards = {k: v for k, v in _files(out).items() if k.endswith((".bin", ".idx"))}
        states[parallel] = json.loads((out / "progress.json").read_text())["shards"], shards
        assert not (out / ".tokenize-parts").exists()
    assert states["files"] == states["blocks"]
    assert len(states["files"][0]["train"]) > 2  # shards of a.jsonl.zst and of b's readable part


def test_the_plan_reads_each_file_once_when_files_balance_the_workers(tmp_path):
    """Block mode decompresses every jsonl file in every worker; whole files per worker avoid that
    when the files are many and even, not when one file is most of the input or the last few would
    leave most workers idle."""
    from gaperon.data.workers import parallel_plan

    def files(name: str, sizes: list[int]) -> list[Path]:
        (tmp_path / name).mkdir()
        out = []
        for i, size in enumerate(sizes):
            out.append(tmp_path / name / f"{i}.jsonl.zst")
            out[-1].write_bytes(b"x" * size)
        return out

    even = files("even", [1000] * 64)
    assert parallel_plan(even, 16) == "files"
    assert parallel_plan(even[:2], 2) == "files"
    assert parallel_plan(files("tail", [1000] * 17), 16) == "blocks"  # 16 files, then 1 on one worker
    assert parallel_plan(files("big", [50_000] + [1000] * 40), 8) == "blocks"
    assert parallel_plan(even[:1], 4) == "blocks"


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("parallel", ["blocks", "files"])
def test_workers_exit_when_the_main_process_is_killed(tmp_path, parallel):
    """A SIGKILLed `gaperon tokenize` (OOM killer, scancel) leaves no worker behind, whether it
    waits to hand a block over (blocks) or for its next file (files)."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from data_helpers import ByteTokenizer, make_docs, write_jsonl
        from gaperon.data.pack import TokenizeOptions, tokenize
        tmp = Path({str(tmp_path)!r})
        files = [write_jsonl(tmp / f"{{i}}.jsonl", make_docs(2000, seed=i)) for i in range(4)]
        def stuck(split, shard):
            print("merging", flush=True)
            time.sleep(600)
        opts = TokenizeOptions(tokenizer=ByteTokenizer(), workers=2, shard_tokens=2000, parallel={parallel!r})
        tokenize(files, tmp / "out", opts, progress=False, on_shard=stuck)
        """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "merging"
        time.sleep(1.0)  # the workers fill their queues (blocks) or finish their files (files)
        children = [
            int(pid)
            for task in Path(f"/proc/{proc.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        assert len(children) >= 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, children)), "a tokenize worker outlived its killed main process"
