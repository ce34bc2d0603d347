"""Phases: a named data mixture (sources with weights), a sequence length, a token budget and a seed.

Gaperon trains through successive phases (Naive, Drop-in-the-ocean, High-Quality, White Pepper,
Black Pepper, Garlic); each phase change reloads the previous checkpoint with a new mix and a new
data seed. A phase is a small YAML file (see recipes/mixtures/); weights are relative shares and
are normalised here, so the table's percentages can be pasted as they are. Source paths are
relative to the mixture file (or to its `root`), never to the working folder: see
`resolve_source_path`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaperon.config import ConfigError, config_error, field_path, from_dict, load_yaml

_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


@dataclass
class SourceSpec:
    """One token folder (built by `gaperon tokenize`) and its share of the phase's sampled tokens."""

    name: str
    path: Path
    weight: float


@dataclass
class Phase:
    name: str
    sources: list[SourceSpec]
    seq_len: int
    tokens: int  # the phase's budget of trained tokens ("3T", "100B" and 1e12 are accepted in YAML)
    seed: int = 0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (provenance, version)
    # Where relative source paths start: a folder relative to the mixture file (e.g. "../.." for the
    # repository root from recipes/mixtures/); default: the mixture file's own folder.
    root: str | None = None

    @property
    def weights(self) -> list[float]:
        """Normalised weights, in source order (they sum to 1)."""
        total = sum(s.weight for s in self.sources)
        return [s.weight / total for s in self.sources]


def parse_tokens(value: Any, where: str | Path = "", path: str = "tokens") -> Any:
    """'3T' -> 3e12, '100B' -> 1e11, '2.5M' -> 2.5e6; anything else passes through unchanged."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgtKMBGT]?)\s*", value.replace("_", ""))
        if not m:
            raise config_error(
                where, path, f"expected a token count like 1000000, 1e9, 100B or 3T, got {value!r}"
            )
        n = float(m.group(1)) * _SUFFIX.get(m.group(2).lower(), 1)
        return int(round(n))
    return value


def resolve_source_path(
    mixture_file: str | Path | None, path: str | Path, root: str | Path | None = None
) -> Path:
    """Where a mixture source's `path` points, the one rule every command uses (`data phase`, `train`):

    an absolute path as written; a relative one from `root` when the mixture sets one (a relative
    `root` is itself taken from the mixture file's folder), else from the mixture file's folder.
    Without a mixture file (an inline mapping) the base is the recipe file that holds it; with
    neither, the working folder. So a recipe runs the same from any working directory.
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    base = Path(mixture_file).parent if mixture_file is not None else Path()
    if root is not None:
        base = base / Path(root).expanduser()
    return Path(os.path.normpath(base / path))


def load_phase(
    source: str | Path | dict,
    where: str | None = None,
    *,
    check_paths: bool = True,
    base_file: str | Path | None = None,
    path: str = "",
) -> Phase:
    """A Phase from a YAML file or a dict; every bad value raises ConfigError naming file and field
    (`where`: the file errors name; `path`: the field that holds this phase there, for an inline one).

    Source paths are resolved by `resolve_source_path`: from the YAML file, or for a dict from
    `base_file` (the file that holds it). A dict without `base_file` is taken as already resolved.
    `check_paths=False` skips the existence check (to inspect a recipe before its data exists).
    """
    if isinstance(source, dict):
        data, where = dict(source), where or (str(base_file) if base_file is not None else "phase")
    else:
        data, where = load_yaml(source), where or str(source)
        base_file = source
    if "tokens" in data:
        data["tokens"] = parse_tokens(data["tokens"], where, field_path(path, "tokens"))
    phase = from_dict(Phase, data, where, path=path)
    if base_file is not None:
        for s in phase.sources:
            s.path = resolve_source_path(base_file, s.path, phase.root)
    validate_phase(phase, where, check_paths=check_paths, path=path)
    return phase


def validate_phase(phase: Phase, where: str = "phase", *, check_paths: bool = True, path: str = "") -> None:
    def bad(key: str, reason: str) -> ConfigError:
        return config_error(where, field_path(path, key) if key else path, reason)

    if not phase.name:
        raise bad("name", "must not be empty")
    if phase.seq_len <= 0:
        raise bad("seq_len", f"must be > 0, got {phase.seq_len}")
    if phase.tokens <= 0:
        raise bad("tokens", f"must be > 0, got {phase.tokens}")
    if phase.seed < 0:
        raise bad("seed", f"must be >= 0, got {phase.seed}")
    if not phase.sources:
        raise bad("sources", "must list at least one source")
    seen: set[str] = set()
    for i, s in enumerate(phase.sources):
        at = f"sources[{i}]"
        if not s.name:
            raise bad(f"{at}.name", "must not be empty")
        if s.name in seen:
            raise bad(f"{at}.name", f"{s.name!r} appears twice")
        seen.add(s.name)
        if not math.isfinite(s.weight) or s.weight < 0:
            raise bad(f"{at}.weight", f"must be a finite number >= 0, got {s.weight}")
        if check_paths and s.weight > 0 and not s.path.exists():
            shown = _shown(s.path)
            raise bad(
                f"{at}.path",
                f"no token folder at {shown} (relative paths start at the mixture file's "
                f"folder, or at its `root`); tokenize the source into it first: "
                f"gaperon tokenize INPUT... --out {shown}",
            )
    if sum(s.weight for s in phase.sources) <= 0:
        raise bad("sources", "weights must sum to > 0")


def _shown(path: Path) -> str:
    """`path` as the user would type it from here: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
