"""Config errors spell the field path one way, wherever they are raised, and list only recipe keys.

The spelling is `FILE: phases[0].lr.peak: reason`: the same whether the YAML type check
(`gaperon.config.from_dict`), a stage's value check (train recipes, mixtures) or a nested builder
(curation steps) finds the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import yaml

from gaperon.config import ConfigError, apply_overrides, from_dict
from gaperon.curate.steps import build_step
from gaperon.data.mixture import load_phase
from gaperon.train.config import load_recipe

PHASE = {"name": "a", "mixture": "synthetic", "seq_len": 32, "steps": 2}


def _recipe(tmp_path, **phase_changes):
    path = tmp_path / "r.yaml"
    data = {"model": {"preset": "micro"}, "tokenizer": None, "phases": [{**PHASE, **phase_changes}]}
    path.write_text(yaml.safe_dump(data))
    return path


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    return str(e.value)


@pytest.mark.parametrize(
    ("lr", "field", "reason"),
    [
        ({"peak": "fast"}, "phases[0].lr.peak", "expected a number"),  # the type check (from_dict)
        ({"warmup_steps": -1}, "phases[0].lr.warmup_steps", "must be >= 0"),  # the recipe's value check
        ({"peek": 1}, "phases[0].lr", "unknown field(s) peek"),
    ],
)
def test_recipe_errors_spell_file_then_field_path(tmp_path, lr, field, reason):
    path = _recipe(tmp_path, lr=lr)
    msg = _message(load_recipe, path)
    assert msg.startswith(f"{path}: {field}: {reason}")
    assert f"{path}." not in msg  # never glued to the file name


def test_override_keys_are_reported_as_field_paths():
    msg = _message(apply_overrides, {"phases": [{"steps": 1}]}, ["phases.3.steps=2"])
    assert msg.startswith("phases: no item '3' in a list of 1")


def test_internal_fields_are_neither_accepted_nor_listed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"phases": [PHASE], "bogus": 1}))
    msg = _message(load_recipe, path)
    known = msg.split("known: ")[1].split(", ")
    assert msg.startswith(f"{path}: unknown field(s) bogus") and "phases" in known
    assert "base_dir" not in known and "source" not in known
    path.write_text(yaml.safe_dump({"phases": [PHASE], "base_dir": "/elsewhere"}))
    assert _message(load_recipe, path).startswith(f"{path}: unknown field(s) base_dir; known: batch")


def test_mixture_errors_inside_a_recipe_carry_the_whole_path(tmp_path):
    data = {
        "name": "m",
        "seq_len": 8,
        "tokens": 100,
        "sources": [{"name": "a", "path": str(tmp_path), "weight": -1}],
    }
    msg = _message(load_phase, data, where="r.yaml", path="phases[1].mixture")
    assert msg.startswith("r.yaml: phases[1].mixture.sources[0].weight: must be a finite number >= 0")
    assert _message(load_phase, {**data, "tokens": "lots"}, where="m.yaml").startswith(
        "m.yaml: tokens: expected a token count"
    )


@pytest.mark.parametrize(
    ("spec", "start"),
    [
        ({"type": "nope"}, "c.yaml: steps[2].type: unknown step 'nope'"),
        (
            {"type": "select_labels", "rules": [{"sources": ["x"], "keep": ["great"]}]},
            "c.yaml: steps[2].rules[0]: label 'great' is not one of",
        ),
        (
            {"type": "select_top_k", "rules": [{"sources": ["x"], "top_percent": "ten"}]},
            "c.yaml: steps[2].rules[0].top_percent: expected a number",
        ),
        ({"type": "select_top_k", "rules": []}, "c.yaml: steps[2].rules: a non-empty list"),
    ],
)
def test_curation_step_errors_nest_into_one_path(spec, start):
    assert _message(build_step, spec, "steps[2]", "c.yaml").startswith(start)


@dataclass
class Inner:
    lr: float = 1.0


@dataclass
class Outer:
    items: list[Inner] = field(default_factory=list)
    table: dict[str, Inner] = field(default_factory=dict)


def test_every_from_dict_error_has_the_shape_file_path_reason():
    shape = re.compile(r"^f\.yaml: [a-z_]+(\[\d+\]|\.[a-z_]+)*: [a-z]")
    for bad in ({"items": [{}, {"lr": "x"}]}, {"table": {"k": {"lr": []}}}, {"items": [{"nope": 1}]}):
        msg = _message(from_dict, Outer, bad, "f.yaml")
        assert shape.match(msg), msg
