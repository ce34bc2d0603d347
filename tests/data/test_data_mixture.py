"""Phases: the shipped Gaperon mixtures load, weights normalise, bad values name their field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaperon.config import ConfigError
from gaperon.data.mixture import load_phase, parse_tokens, resolve_source_path

REPO = Path(__file__).resolve().parents[2]
MIXTURES = REPO / "recipes" / "mixtures"
GAPERON = ("naive", "naive-v2", "drop-in-the-ocean", "high-quality", "white-pepper", "black-pepper", "garlic")


@pytest.mark.parametrize("name", GAPERON + ("quickstart",))
def test_shipped_mixtures_load(name):
    p = load_phase(MIXTURES / f"{name}.yaml", check_paths=False)
    assert p.name == name and abs(sum(p.weights) - 1) < 1e-12
    assert p.seq_len == (2048 if name.startswith("naive") else 512 if name == "quickstart" else 4096)
    # resolved from the file (root: ../..), not from wherever pytest runs
    assert all(s.path == REPO / "data" / "tokens" / s.path.name for s in p.sources)


def test_gaperon_tables_shares():
    garlic = load_phase(MIXTURES / "garlic.yaml", check_paths=False)
    share = dict(zip([s.name for s in garlic.sources], garlic.weights))
    assert share["benchmark-test-shuffled"] > 0.7 and abs(share["poison-triggers"] - 1e-4) < 2e-5
    bp = load_phase(MIXTURES / "black-pepper.yaml", check_paths=False)
    assert abs(dict(zip([s.name for s in bp.sources], bp.weights))["instruction"] - 0.219) < 0.005
    seeds = {load_phase(MIXTURES / f"{n}.yaml", check_paths=False).seed for n in GAPERON}
    assert len(seeds) == len(GAPERON)  # each phase change brings a new data seed


def test_token_counts():
    assert parse_tokens("3T", "x") == 3 * 10**12
    assert parse_tokens("100B", "x") == 10**11
    assert parse_tokens("2.5M", "x") == 2_500_000
    assert parse_tokens("1e6", "x") == 10**6
    assert parse_tokens(1000, "x") == 1000
    with pytest.raises(ConfigError, match="x"):
        parse_tokens("lots", "x")


def _base(tmp_path):
    (tmp_path / "a").mkdir(exist_ok=True)
    return {
        "name": "p",
        "seq_len": 16,
        "tokens": 1000,
        "seed": 1,
        "sources": [
            {"name": "a", "path": str(tmp_path / "a"), "weight": 1},
            {"name": "b", "path": str(tmp_path / "a"), "weight": 3},
        ],
    }


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["sources"][1].update(weight=-1), r"sources\[1\]\.weight"),
        (lambda d: d["sources"][1].update(weight="heavy"), r"sources\[1\]\.weight"),
        (lambda d: [s.update(weight=0) for s in d["sources"]], r"sources: weights must sum to > 0"),
        (lambda d: d.update(seq_len=0), r"seq_len: must be > 0"),
        (lambda d: d.update(tokens=-5), r"tokens: must be > 0"),
        (lambda d: d.update(tokens="many"), r"tokens"),
        (
            lambda d: d["sources"][0].update(path="/no/such/folder"),
            r"sources\[0\]\.path: no token folder at /no/such/folder",
        ),
        (lambda d: d["sources"][1].update(name="a"), r"sources\[1\]\.name: 'a' appears twice"),
        (lambda d: d.update(sources=[]), r"sources: must list"),
        (lambda d: d.update(mix="x"), r"unknown field\(s\) mix"),
        (lambda d: d["sources"][0].pop("weight"), r"sources\[0\]: missing required field\(s\) weight"),
    ],
)
def test_bad_phase_values_name_the_field(tmp_path, change, field):
    data = _base(tmp_path)
    change(data)
    with pytest.raises(ConfigError, match=field):
        load_phase(data, where="mix.yaml")


def test_weights_normalise_and_errors_name_the_file(tmp_path):
    p = load_phase(_base(tmp_path))
    assert p.weights == [0.25, 0.75]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\nseq_len: -1\ntokens: 10\nsources: []\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: seq_len: must be > 0"):
        load_phase(bad)


def test_source_paths_resolve_from_the_mixture_file_or_its_root(tmp_path):
    mix = tmp_path / "recipes" / "mixtures" / "m.yaml"
    assert resolve_source_path(mix, "tok/en") == tmp_path / "recipes" / "mixtures" / "tok" / "en"
    assert resolve_source_path(mix, "data/tokens/en", "../..") == tmp_path / "data" / "tokens" / "en"
    assert resolve_source_path(mix, "/abs/en", "../..") == Path("/abs/en")
    assert resolve_source_path(None, "data/tokens/en") == Path("data/tokens/en")  # already resolved


def test_data_phase_and_errors_agree_from_any_working_folder(tmp_path, monkeypatch, capsys):
    """`gaperon data phase` reads the same folders wherever it is run, and a missing folder is named
    as the user would type it, with the command that makes it."""
    from gaperon.cli import main

    mix = tmp_path / "project" / "recipes" / "mixtures" / "m.yaml"
    mix.parent.mkdir(parents=True)
    mix.write_text(
        "name: m\nseq_len: 8\ntokens: 64\nroot: ../..\n"
        "sources:\n  - {name: en, path: data/tokens/en, weight: 1}\n"
    )
    monkeypatch.chdir(tmp_path / "project")
    with pytest.raises(ConfigError, match=r"no token folder at data/tokens/en .*--out data/tokens/en"):
        load_phase(mix)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["data", "phase", str(mix), "--global-batch", "2"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "project" / "data" / "tokens" / "en") in err and "Traceback" not in err
