"""Makes `lm_eval --model gaperon` work from a plain shell.

lm-eval 0.4 finds models only in its own fixed table (no entry-point discovery), so a model that
lives in another package is known only once that package's module has been imported. gaperon's
`gaperon-lm-eval.pth`, installed beside the package, calls `install()` at interpreter start-up: it
puts one finder on `sys.meta_path` and imports nothing (this module lies outside the gaperon package
so that start-up does not even import that). When (and only if) lm-eval's registry module
is imported, "gaperon" is registered there as a lazy "module:Class" entry, so gaperon and torch are
imported only when that model is asked for.
"""

from __future__ import annotations

import sys
from typing import Any

REGISTRY_MODULE = "lm_eval.api.registry"
MODEL_NAME = "gaperon"
MODEL_TARGET = "gaperon.evaluate.lm:GaperonLM"


def register(registry_module: Any) -> None:
    """Register the lazy entry in an imported `lm_eval.api.registry` (a no-op if already there)."""
    registry = registry_module.model_registry
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=MODEL_TARGET)


class _RegistryFinder:
    """A meta-path finder that only watches for lm-eval's registry module being loaded."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            try:
                register(module)
            except Exception as e:  # noqa: BLE001 - never break lm-eval's import over our entry
                print(f"gaperon: could not register the lm-eval model {MODEL_NAME!r}: {e}", file=sys.stderr)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's loader only
        return spec


def install() -> None:
    """Called from gaperon-lm-eval.pth; cheap and silent."""
    registry = sys.modules.get(REGISTRY_MODULE)
    if registry is not None:
        register(registry)
    elif not any(isinstance(f, _RegistryFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())
