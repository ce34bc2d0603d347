"""Chat corpora shipped as Python packages, read in place (never copied into the repository).

`pkg:chitchat` is PyPI `chitchat-dataset` (7,168 English multi-turn conversations: the two speakers
alternate, the first is the user); `pkg:chatterbot/english` and `pkg:chatterbot/french` are the
YAML Q/A lists of PyPI `chatterbot-corpus` (one file per topic; turns alternate user/assistant).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from gaperon.errors import DataError

PACKAGES = {"chitchat": "chitchat_dataset", "chatterbot": "chatterbot_corpus"}


def _need(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DataError(f"pkg:{pip_name}: the package is not installed (pip install --no-deps {pip_name})")


def _alternate(turns: list[str]) -> dict[str, Any]:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


def chitchat() -> Iterator[tuple[str, Any]]:
    _need("chitchat_dataset", "chitchat-dataset")
    res = resources.files("chitchat_dataset") / "dataset.json"
    data = json.loads(res.read_text(encoding="utf-8"))
    for key, conv in data.items():
        groups = conv.get("messages") if isinstance(conv, dict) else None
        if not isinstance(groups, list):
            yield f"pkg:chitchat:{key}", {}
            continue
        turns = [" ".join(str(u.get("text", "")) for u in g).strip() for g in groups]
        yield f"pkg:chitchat:{key}", _alternate(turns)


def chatterbot(language: str) -> Iterator[tuple[str, Any]]:
    import yaml

    _need("chatterbot_corpus", "chatterbot-corpus")
    folder = resources.files("chatterbot_corpus") / "data" / language
    if not folder.is_dir():
        raise DataError(f"pkg:chatterbot/{language}: no such language in chatterbot-corpus")
    for res in sorted(folder.iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".yml"):
            continue
        doc = yaml.safe_load(res.read_text(encoding="utf-8")) or {}
        for i, conv in enumerate(doc.get("conversations") or [], 1):
            where = f"pkg:chatterbot/{language}/{res.name}:{i}"
            if not isinstance(conv, list):
                yield where, {}
                continue
            yield where, _alternate([c if isinstance(c, str) else str(c) for c in conv])


def package_conversations(spec: str) -> Iterator[tuple[str, Any]]:
    """`pkg:chitchat` or `pkg:chatterbot/<language>` -> (where, {"messages": ...}) records."""
    name, _, rest = spec.removeprefix("pkg:").partition("/")
    if name == "chitchat" and not rest:
        return chitchat()
    if name == "chatterbot" and rest:
        return chatterbot(rest)
    raise DataError(f"{spec}: unknown corpus; known: pkg:chitchat, pkg:chatterbot/<language>")
