"""`gaperon curate`: same output at 1 and 2 tasks, resume, report, bad input, the Slurm job script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from curate_helpers import read_output, samples, write_jsonl_zst

from gaperon.cli import main
from gaperon.curate.demo import noisy_web_slice
from gaperon.curate.pipeline import load_recipe, run_recipe
from gaperon.errors import ConfigError, DataError

STEPS = [
    {"type": "language_id", "keep": ["fr", "en"], "min_score": 0.5},
    {"type": "gopher_repetition"},
    {"type": "gopher_quality"},
    {"type": "minhash_dedup"},
    {"type": "rehydrate", "field": "dup_count", "max_repeat": 3},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("corpus")
    fr = write_jsonl_zst(d / "fr.jsonl.zst", samples("fr", 60))
    en = [{**r, "dup_count": 2} if i % 10 == 0 else r for i, r in enumerate(samples("en", 60))]
    en_path = write_jsonl_zst(d / "en.jsonl.zst", en)
    noisy = noisy_web_slice([fr, en_path], d / "noisy.jsonl.zst", n=42, seed=3)
    return [str(fr), str(en_path), str(noisy)]


def _recipe(tmp: Path, inputs: list[str], out: str, tasks: int, steps=STEPS) -> Path:
    path = tmp / f"recipe-{out}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inputs": {"paths": inputs},
                "output": str(tmp / out),
                "executor": {"kind": "local", "tasks": tasks},
                "steps": steps,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    reports = {}
    for tasks in (1, 2):
        recipe = load_recipe(_recipe(tmp, corpus, f"t{tasks}", tasks))
        reports[tasks] = run_recipe(recipe, progress=False)
    return tmp, reports


def test_one_and_two_tasks_give_identical_output(runs):
    tmp, reports = runs
    one, two = read_output(tmp / "t1" / "output"), read_output(tmp / "t2" / "output")
    assert one and one == two
    strip = [{k: v for k, v in s.items() if k != "where"} for s in reports[1]["steps"]]
    assert strip == [{k: v for k, v in s.items() if k != "where"} for s in reports[2]["steps"]]


def test_report_counts_add_up_and_name_the_noise(runs):
    tmp, reports = runs
    rep = json.loads((tmp / "t2" / "report.json").read_text())
    assert rep == json.loads(json.dumps(reports[2]))
    steps = {s["step"]: s for s in rep["steps"]}
    for s in rep["steps"]:
        if "rehydrate" not in s["step"]:
            assert s["in"] == s["kept"] + sum(s["dropped"].values()), s["step"]
    chain = [s["kept"] for s in rep["steps"]]
    assert all(b == a for a, b in zip(chain[:-2], [s["in"] for s in rep["steps"][1:-1]]))
    assert steps["01_language_id"]["dropped"]["other_language"] >= 5  # 6 de/es/it documents
    # Every injected copy (exact or 5% of words changed) whose original reached the output is gone.
    out = [json.loads(ln) for blob in read_output(tmp / "t2" / "output").values() for ln in blob.splitlines()]
    ids = {r["id"] for r in out}
    copies = [r for r in out if r["metadata"].get("copy_of")]
    originals_kept = [r for r in samples("fr", 60) + samples("en", 60) if r["id"] in ids]
    assert len(originals_kept) >= 20
    assert not [r["id"] for r in copies if r["metadata"]["copy_of"] in ids]
    assert steps["04_minhash_dedup"]["dropped"]["near_duplicate"] >= 4
    assert steps["05_rehydrate"]["kept"] > steps["05_rehydrate"]["in"]
    # The output is what `gaperon tokenize` reads: text, source, lang; scores stay in metadata.
    line = next(iter(read_output(tmp / "t2" / "output").values())).splitlines()[0]
    rec = json.loads(line)
    assert (
        rec["lang"] in ("fr", "en") and "language_score" in rec["metadata"] and "_file" not in rec["metadata"]
    )
    assert (tmp / "t2" / "report.md").read_text().startswith("# Curation report")
    assert (tmp / "t2" / "scores.png").stat().st_size > 0 and (tmp / "t2" / "languages.png").exists()


def test_rerun_skips_completed_tasks_and_resumes_an_interrupted_one(runs, corpus):
    tmp, _ = runs
    out = tmp / "t2"
    before = read_output(out / "output")
    logs = sorted((out / "_work" / "logs").glob("stage*/completions/*"))
    assert logs
    # Interrupted: the last stage's task 1 never completed and its output is gone.
    last = sorted((out / "_work" / "logs").glob("stage*"))[-1]
    (last / "completions" / "00001").unlink()
    for name in before:
        if int(name[:5]) % 2 == 1:
            (out / "output" / name).unlink()
    run_recipe(load_recipe(_recipe(tmp, corpus, "t2", 2)), progress=False)
    assert read_output(out / "output") == before
    # A different recipe in the same folder is refused rather than mixed in.
    with pytest.raises(ConfigError, match="different recipe"):
        run_recipe(load_recipe(_recipe(tmp, corpus, "t2", 2, steps=STEPS[:2])), progress=False)


def test_malformed_records_are_counted_with_file_and_line(tmp_path, corpus):
    good = samples("fr", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps(good[0]),
                "{not json",
                json.dumps({"id": "x"}),
                json.dumps({"text": 3}),
                json.dumps(good[1]),
            ]
        )
        + "\n"
    )
    rep = run_recipe(load_recipe(_recipe(tmp_path, [str(bad)], "bad", 1, steps=STEPS[:1])), progress=False)
    read = rep["steps"][0]
    assert read["kept"] == 2
    assert read["where"] == {
        "malformed_json": [f"{bad}:2"],
        "missing_text": [f"{bad}:3"],
        "non_string_text": [f"{bad}:4"],
    }


def test_a_non_empty_file_that_yields_nothing_is_an_error(tmp_path):
    junk = tmp_path / "junk.jsonl.zst"
    write_jsonl_zst(junk, [{"content": "the text is in the wrong field"}] * 3)
    with pytest.raises(
        DataError, match=r"junk.jsonl.zst: a non-empty file yields no document .*missing_text"
    ):
        run_recipe(load_recipe(_recipe(tmp_path, [str(junk)], "junk", 1, steps=STEPS[:1])), progress=False)
    # and through the CLI: one line, exit code 1, no traceback
    rc = main(["curate", str(_recipe(tmp_path, [str(junk)], "junk2", 1, steps=STEPS[:1])), "--quiet"])
    assert rc == 1


FAKE_SBATCH = """#!/bin/sh
n=$(( $(cat "$SBATCH_LOG/count" 2>/dev/null || echo 100) + 1 ))
echo $n > "$SBATCH_LOG/count"
for last; do :; done
echo "$n $*" >> "$SBATCH_LOG/calls"
cp "$last" "$SBATCH_LOG/job_$n.sh"
echo "Submitted batch job $n"
"""


@pytest.mark.slow
def test_slurm_job_scripts_run_the_same_job(tmp_path, corpus, runs, monkeypatch):
    """Submit through a stand-in `sbatch`, then run each generated job's tasks as Slurm would."""
    import os
    import subprocess
    import sys

    from gaperon.curate.report import write_report

    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")  # `scontrol show hostnames`
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(log))
    recipe = load_recipe(
        _recipe(tmp_path, corpus, "slurm", 2), ["executor.kind=slurm", "executor.partition=cpu"]
    )
    assert run_recipe(recipe, progress=False)["submitted"]
    calls = (log / "calls").read_text().splitlines()
    jobs = [c for c in calls if "merge_stats" not in (log / f"job_{c.split()[0]}.sh").read_text()]
    assert len(jobs) == 3  # pass 1 of the MinHash step, its reduce, then the rest
    ids = [c.split()[0] for c in jobs]
    assert "--dependency" not in jobs[0]
    assert f"--dependency=afterok:{ids[0]}" in jobs[1] and f"--dependency=afterok:{ids[1]}" in jobs[2]
    scripts = [(log / f"job_{i}.sh").read_text() for i in ids]
    assert "#SBATCH --array=0-1" in scripts[0] and "#SBATCH --array=0-0" in scripts[1]
    assert all("#SBATCH --partition=cpu" in s and "launch_pickled_pipeline" in s for s in scripts)
    # Run the pickled pipelines the scripts launch, task by task, in dependency order.
    launcher = os.path.join(os.path.dirname(sys.executable), "launch_pickled_pipeline")
    for script in scripts:
        pik = script.split("launch_pickled_pipeline ")[1].split()[0]
        tasks = int(script.split("#SBATCH --array=0-")[1].split()[0]) + 1
        for rank in range(tasks):
            env = {
                **os.environ,
                "SLURM_ARRAY_TASK_ID": str(rank),
                "RUN_OFFSET": "0",
                "SLURM_NODELIST": "localhost",
            }
            subprocess.run([launcher, pik], check=True, env=env, capture_output=True)
    write_report(str(tmp_path / "slurm"))
    runs_tmp, _ = runs
    assert read_output(tmp_path / "slurm" / "output") == read_output(runs_tmp / "t1" / "output")


def test_cli_overrides_and_usage_errors(tmp_path, corpus, capsys):
    recipe = _recipe(tmp_path, ["nowhere"], "cli", 1, steps=STEPS[:1])
    assert (
        main(["curate", str(recipe), "--input", corpus[0], "--output", str(tmp_path / "o"), "--quiet"]) == 0
    )
    assert "| 01_language_id |" in capsys.readouterr().out
    assert main(["curate", str(recipe), "executor.tasks"]) == 2
    shutil.rmtree(tmp_path / "o")


@pytest.mark.slow
def test_ray_executor_gives_the_same_output(tmp_path, corpus, runs):
    """A local Ray instance started here runs the same recipe to the same bytes."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        recipe = load_recipe(
            _recipe(tmp_path, corpus, "ray", 2), ["executor.kind=ray", "executor.mem_per_cpu_gb=0.25"]
        )
        run_recipe(recipe, progress=False)
    finally:
        ray.shutdown()
    runs_tmp, _ = runs
    assert read_output(tmp_path / "ray" / "output") == read_output(runs_tmp / "t1" / "output")


def test_parquet_input_reads_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gaperon.curate.io import InputReader

    recs = samples("en", 5)
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "en.parquet")
    jsonl = write_jsonl_zst(tmp_path / "en.jsonl.zst", recs)
    got = {}
    for path in (tmp_path / "en.parquet", jsonl):
        docs = list(InputReader([str(path)]).run(None))
        got[path.suffix] = [(d.id, d.text, d.metadata["source"], d.metadata["_line"]) for d in docs]
    assert got[".parquet"] == got[".zst"] and len(got[".zst"]) == 5
