"""gaperon.config: YAML -> typed dataclasses, overrides, and errors that name the file and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from gaperon.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    kind: Literal["cosine", "constant"] = "constant"


@dataclass
class Outer:
    name: str
    steps: int = 10
    betas: tuple[float, float] = (0.9, 0.95)
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    out: Path | None = None
    flag: bool = False


def test_nested_dataclasses_and_coercions():
    cfg = from_dict(
        Outer,
        {
            "name": "x",
            "steps": 3.0,
            "betas": [0.8, 0.9],
            "inner": {"lr": "3e-4", "kind": "cosine"},
            "items": [{"lr": 1}],
            "out": "runs/a",
        },
    )
    assert cfg.steps == 3 and isinstance(cfg.steps, int)
    assert cfg.betas == (0.8, 0.9)
    assert cfg.inner == Inner(3e-4, "cosine")
    assert cfg.items == [Inner(1.0)]
    assert cfg.out == Path("runs/a")
    assert to_dict(cfg)["out"] == "runs/a"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "stepz": 1}, "recipe.yaml: unknown field(s) stepz"),
        ({}, "recipe.yaml: missing required field(s) name"),
        ({"name": "x", "steps": 1.5}, "recipe.yaml: steps: expected an integer"),
        ({"name": "x", "steps": True}, "recipe.yaml: steps: expected an integer"),
        ({"name": "x", "inner": {"lr": "fast"}}, "recipe.yaml: inner.lr: expected a number"),
        ({"name": "x", "inner": {"kind": "linear"}}, "recipe.yaml: inner.kind: 'linear' is not one of"),
        ({"name": "x", "items": [{"lr": 1}, {"oops": 2}]}, "recipe.yaml: items[1]: unknown field(s) oops"),
        ({"name": "x", "flag": "yes"}, "recipe.yaml: flag: expected true/false"),
        ({"name": 3}, "recipe.yaml: name: expected a string"),
        ({"name": "x", "betas": [0.9]}, "recipe.yaml: betas: expected 2 values, got 1"),
        ({"name": "x", "betas": [0.9, "b"]}, "recipe.yaml: betas[1]: expected a number"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, "recipe.yaml")
    assert message in str(e.value)


def test_overrides_set_nested_keys_and_list_items():
    data = {"train": {"lr": 1.0}, "phases": [{"steps": 1}, {"steps": 2}]}
    out = apply_overrides(data, ["train.lr=3e-4", "phases.1.steps=7", "new.key=[1, 2]", "name=a=b"])
    assert out == {
        "train": {"lr": 3e-4},
        "phases": [{"steps": 1}, {"steps": 7}],
        "new": {"key": [1, 2]},
        "name": "a=b",
    }
    assert data["train"]["lr"] == 1.0  # the input is not modified
    assert parse_override("a.b=true") == (["a", "b"], True)
    for bad in ["novalue", "=3", "phases.5.steps=1", "train.lr.x=1"]:
        with pytest.raises(ConfigError):
            apply_overrides(data, [bad])


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: no such file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_yaml(listy)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not UTF-8"):
        load_yaml(latin)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}
