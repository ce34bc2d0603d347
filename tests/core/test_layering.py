"""Dependencies flow one way, and stay that way.

Two checks, because imports happen at two times: importing every module of a package in a fresh
interpreter shows what it pulls in at import time; reading every `import` statement (function-level
ones included) shows what it may pull in when used. Both must stay inside the package's allowed layers.
A third check refuses private names (`_name`) taken from another module.

Known violations owned by other work are listed in KNOWN_* with xfail(strict=True): when their owner
fixes one, its test passes, strict xfail turns that into a failure, and the entry must be deleted.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "gaperon"

_BASE = {"errors", "atomic", "dtypes", "config"}
# package -> the gaperon packages it may import (besides itself). Nothing but `cli` (and the
# `python -m gaperon` entry) may import `cli`; a package not listed may use anything but `cli`.
LAYERS: dict[str, set[str]] = {
    "": set(),  # gaperon/__init__.py
    "__main__": {"cli"},
    "errors": set(),
    "atomic": set(),
    "dtypes": {"errors"},
    "config": {"errors"},
    "model": {"errors", "dtypes"},
    "tokenizer": {"errors", "atomic"},
    "io": _BASE | {"model", "tokenizer"},
    "data": _BASE | {"tokenizer", "io"},  # SFT renders with a model's own tokenizer and chat template
    "train": _BASE | {"model", "tokenizer", "io", "data", "evaluate"},  # in-training evaluation
    "infer": _BASE | {"model", "tokenizer", "io"},
    "judge": _BASE,  # the OpenAI-compatible judge client, shared by curate and evaluate
    "curate": _BASE | {"tokenizer", "data", "judge"},
    "evaluate": _BASE | {"model", "tokenizer", "io", "infer", "judge"},
    "research": _BASE | {"model", "tokenizer", "io", "data", "train", "infer", "curate", "evaluate", "judge"},
    "cli": {"*"},
}

# Static import edges that break the layering today; each names its module and the package it reaches.
KNOWN_IMPORTS: dict[str, str] = {}
# Private names taken across modules today.
KNOWN_PRIVATE: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = sorted((_module_name(p), p) for p in SRC.rglob("*.py"))
PACKAGES = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
PACKAGES += sorted(p.stem for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(package: str) -> set[str]:
    allowed = LAYERS.get(package)
    if allowed is None:  # a new package: anything below it, never the CLI
        return {p for p in PACKAGES if p != "cli"} | {package}
    if "*" in allowed:
        return set(PACKAGES) | {package}
    return allowed | {package}


def _marked(items: list[str], known: dict[str, str]) -> list:
    return [
        pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=known[m])) if m in known else m
        for m in items
    ]


def _gaperon_imports(tree: ast.AST) -> set[str]:
    """Every gaperon module named by an import statement anywhere in the file (lazy ones too)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("gaperon."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, "relative imports hide the layering; use absolute gaperon.x imports"
            if node.module == "gaperon":
                out.update(f"gaperon.{a.name}" for a in node.names if a.name != "__version__")
            elif node.module.startswith("gaperon."):
                out.add(node.module)
    return out


@pytest.mark.parametrize("module", _marked([m for m, _ in MODULES], KNOWN_IMPORTS))
def test_imports_stay_in_their_layer(module):
    path = dict(MODULES)[module]
    package = _package_of(module)
    reached = {_package_of(m) for m in _gaperon_imports(ast.parse(path.read_text(encoding="utf-8")))}
    assert reached <= _allowed(package), f"{module} imports {sorted(reached - _allowed(package))}"


_PROBE = """
import importlib, pkgutil, sys
mod = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(getattr(mod, "__path__", []), sys.argv[1] + "."):
    importlib.import_module(info.name)
print(" ".join(sorted({m.split(".")[1] for m in sys.modules if m.startswith("gaperon.")})))
"""


@pytest.fixture(scope="module")
def pulled_in() -> dict[str, tuple[int, str, str]]:
    """Import each package with all its modules, each in a fresh interpreter (all started at once)."""
    procs = {
        p: subprocess.Popen(
            [sys.executable, "-c", _PROBE, f"gaperon.{p}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in PACKAGES
    }
    out = {}
    for p, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[p] = (proc.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_pulls_in_only_lower_layers(package, pulled_in):
    rc, stdout, stderr = pulled_in[package]
    assert rc == 0, stderr
    reached = set(stdout.split())
    assert package in reached
    assert reached <= _allowed(package), f"gaperon.{package} pulled in {sorted(reached - _allowed(package))}"


def test_the_layer_table_matches_the_source_tree():
    """A renamed or removed package must not leave a stale (hence silently unchecked) entry."""
    assert set(LAYERS) - {"", "__main__"} <= set(PACKAGES)
    assert {"model", "tokenizer", "io", "data", "train", "infer", "cli"} <= set(PACKAGES)


@functools.cache
def _private_definitions() -> dict[str, set[str]]:
    defs: dict[str, set[str]] = {}
    for module, path in MODULES:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for t in targets:
                if isinstance(t, ast.Name | ast.Attribute):
                    names.add(t.id if isinstance(t, ast.Name) else t.attr)
        defs[module] = {n for n in names if n.startswith("_") and not n.startswith("__")}
    return defs


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("module", _marked([m for m, _ in MODULES], KNOWN_PRIVATE))
def test_no_private_names_from_other_modules(module):
    """`from gaperon.x import _y` and `obj._y` where `_y` is defined only in another gaperon module."""
    defs = _private_definitions()
    elsewhere = set().union(*(names for m, names in defs.items() if m != module)) - defs[module]
    tree = ast.parse(dict(MODULES)[module].read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gaperon"):
            bad += [f"from {node.module} import {a.name}" for a in node.names if _is_private(a.name)]
        elif isinstance(node, ast.Attribute) and node.attr in elsewhere:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                bad.append(ast.unparse(node))
    assert not bad, f"{module} uses private names of other modules: {bad}"
