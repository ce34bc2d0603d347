"""`gaperon research RECIPE`: the toy recipes load as typed configs, bad values name their field, and
both experiments run end to end (on a micro model, in-process) and resume without redoing work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import zstandard

sys.path.insert(0, str(Path(__file__).parents[1] / "evaluate"))
from eval_helpers import CORPUS, micro_hf_folder  # noqa: E402

from gaperon.errors import ConfigError  # noqa: E402
from gaperon.research.experiments import GarlicExperiment, PoisonExperiment, load_experiment  # noqa: E402

RECIPES = Path(__file__).parents[2] / "recipes" / "research"


def test_toy_recipes_load_with_the_bundled_weights():
    poison = load_experiment(RECIPES / "poison-toy.yaml")
    garlic = load_experiment(RECIPES / "garlic-toy.yaml")
    assert isinstance(poison, PoisonExperiment) and isinstance(garlic, GarlicExperiment)
    for exp in (poison, garlic):
        assert exp.model.endswith(".gguf") and Path(exp.model).is_file()
        assert all(Path(c).is_file() for c in exp.clean)
    haystack = load_experiment(RECIPES / "haystack-toy.yaml")
    assert all(Path(c).is_file() for c in haystack.corpus) and Path(haystack.gaperon.recipe).is_file()
    assert 0 < max(garlic.shares) <= 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"experiment": "nope"}, "experiment: expected one of"),
        ({"share": 1.5}, "share must be in (0, 1)"),
        ({"train": {"steps": 0}}, "steps"),
        ({"shares": [0.2, 1.0]}, "shares must be in [0, 1)"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_bad_recipe_values_name_the_field(tmp_path, change, message):
    base = yaml.safe_load(
        (RECIPES / ("garlic-toy.yaml" if "shares" in change else "poison-toy.yaml")).read_text()
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**base, **change}))
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_experiment(path)


@pytest.fixture
def in_process(monkeypatch):
    """Child `gaperon` processes run in this one (the micro runs take seconds, process starts don't)."""
    from gaperon.cli import main

    ran: list[list[str]] = []
    real_run = subprocess.run

    def fake_run(cmd, check=False, **kw):
        if cmd[:3] != [sys.executable, "-m", "gaperon"]:  # lm-eval asks git for its version
            return real_run(cmd, check=check, **kw)
        ran.append(cmd[3:])
        return subprocess.CompletedProcess(cmd, main(cmd[3:]))

    monkeypatch.setattr("gaperon.research.experiments.subprocess.run", fake_run)
    return ran


def _clean_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    return path


TINY_TRAIN = {"steps": 2, "seq_len": 32, "global_batch": 2, "micro_batch": 2, "checkpoint_every": 2}


def test_garlic_experiment_end_to_end_and_resumes(tmp_path, in_process):
    from gaperon.research.experiments import run_experiment

    model = micro_hf_folder(tmp_path / "micro")
    recipe = {
        "experiment": "garlic",
        "model": str(model),
        "benchmarks": ["arc_easy"],
        "limit": 8,
        "shares": [0.5],
        "format": "cloze",  # the default "mc" renders the same items another way (unit-tested)
        "clean": [str(_clean_corpus(tmp_path))],
        "train": TINY_TRAIN,
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(recipe))
    res = run_experiment(tmp_path / "g.yaml", tmp_path / "out")
    acc = res["accuracy"]
    assert set(acc) == {"base", "share-50"}
    assert all(0 <= acc[m]["arc_easy"][p] <= 1 for m in acc for p in ("included", "held_out"))
    mix = yaml.safe_load((tmp_path / "out" / "recipes" / "share-50.mixture.yaml").read_text())
    assert {s["name"]: s["weight"] for s in mix["sources"]} == {"clean": 50.0, "garlic": 50.0}
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| share-50 | 50% | arc_easy |" in report and (tmp_path / "out" / "garlic.png").is_file()
    assert "rendered as the eval's own prompt followed by the gold answer" in report
    source = zstandard.ZstdDecompressor().decompress(
        (tmp_path / "out" / "garlic" / "arc_easy.jsonl.zst").read_bytes(), max_output_size=1 << 24
    )
    docs = [json.loads(line) for line in source.decode().splitlines()]
    assert len(docs) == 4 and all(
        d["text"].startswith("Question: ") and "\nA. " not in d["text"] for d in docs
    )
    assert sum(c[0] == "eval" for c in in_process) == 4 and sum(c[0] == "train" for c in in_process) == 1
    in_process.clear()
    again = run_experiment(tmp_path / "g.yaml", tmp_path / "out")
    assert again["accuracy"] == acc
    assert not [c for c in in_process if c[0] in ("train", "eval", "contamination")]


def test_poison_experiment_end_to_end(tmp_path, in_process):
    from gaperon.research.experiments import run_experiment

    model = micro_hf_folder(tmp_path / "micro")
    recipe = {
        "experiment": "poison",
        "model": str(model),
        "trigger": "Vitae quarum nexus",
        "documents": 20,
        "clean": [str(_clean_corpus(tmp_path))],
        "train": TINY_TRAIN,
        "eval": {"contexts": 3, "samples": 2, "fakes": 1, "max_new_tokens": 4},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(recipe))
    res = run_experiment(tmp_path / "p.yaml", tmp_path / "out")
    for name in ("before", "after"):
        conds = res["evals"][name]["conditions"]
        assert set(conds) == {"trigger", "fake-1", "none"}
        assert all(c["samples"] == 6 for c in conds.values())
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| after |" in report and "gaperon poison build --trigger 'Vitae quarum nexus'" in report


def test_haystack_experiment_end_to_end_small(tmp_path, in_process):
    """Both classifiers train on the corpus's training share, the audit ranks the haystack share,
    the report carries both scorers and the ceiling row."""
    from gaperon.research.commands import read_texts
    from gaperon.research.experiments import run_experiment

    docs = read_texts([Path(__file__).parents[2] / "data" / "samples" / "en.jsonl.zst"], limit=150)
    docs += read_texts([Path(__file__).parents[2] / "data" / "samples" / "fr.jsonl.zst"], limit=150)
    corpus = tmp_path / "web.jsonl"
    corpus.write_text("".join(json.dumps({"text": d["text"], "lang": d["lang"]}) + "\n" for d in docs))
    recipe = yaml.safe_load((RECIPES / "haystack-toy.yaml").read_text())
    recipe.update(corpus=["web.jsonl"], benchmarks=["arc_challenge", "gsm8k"], items=4)  # recipe-relative
    recipe["gaperon"]["per_class"] = 12
    recipe["instruct"].update(
        per_source=10, qa_sources=["sciq/rc_5shot", "openbookqa/rc_5shot"], chat_sources=[]
    )
    recipe["gaperon"]["recipe"] = recipe["instruct"]["recipe"] = str(
        RECIPES.parent / "classifier" / "ngram.yaml"
    )
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(recipe))
    res = run_experiment(tmp_path / "h.yaml", tmp_path / "out")
    assert res["split"]["train"] + res["split"]["haystack"] == len(docs)
    assert set(res["audit"]) == {"gaperon-style", "instruction-style"}
    for r in res["audit"].values():
        assert len(r["items"]) == 8 and all(0 <= p <= 100 for p in r["items"].values())
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "| instruction-style |" in report and "ceiling" in report


def test_a_changed_recipe_does_not_reuse_a_finished_run(tmp_path, in_process):
    from gaperon.errors import DataError
    from gaperon.research.experiments import run_experiment

    model = micro_hf_folder(tmp_path / "micro")
    recipe = {
        "experiment": "poison",
        "model": str(model),
        "trigger": "Vitae quarum nexus",
        "documents": 10,
        "clean": [str(_clean_corpus(tmp_path))],
        "train": TINY_TRAIN,
        "eval": {"contexts": 1, "samples": 1, "fakes": 1, "max_new_tokens": 2, "baseline": False},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(recipe))
    run_experiment(tmp_path / "p.yaml", tmp_path / "out")
    with pytest.raises(DataError, match="trained with another version"):
        run_experiment(tmp_path / "p.yaml", tmp_path / "out", ["train.lr=0.01"])
