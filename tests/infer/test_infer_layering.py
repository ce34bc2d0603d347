"""The infer package's imports flow one way (no cycle, not even through function-level imports) and no
module reaches for another module's private names."""

import ast
from pathlib import Path

import gaperon.infer

PACKAGE = Path(gaperon.infer.__file__).parent


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gaperon.infer."):
                deps.add(node.module.split(".")[2])
    return graph


def test_no_import_cycle_in_infer():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, name, dep])
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    # The shared layer knows none of the decoders.
    assert not graph["requests"] & {"generate", "engine", "speculative", "server", "chat"}
    assert not graph["speculative"] & {"generate", "engine"}


def test_no_private_names_imported_across_modules():
    src = PACKAGE.parent
    bad = []
    for path in [*PACKAGE.glob("*.py"), src / "cli" / "infer.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gaperon"):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad
