"""Conversations out of the files people have: OpenAI `messages`, `prompt`/`completion`, ShareGPT.

Every record becomes a list of `{"role", "content"}` messages with roles system/user/assistant.
Bad records are counted per reason with the first `file:line` (the pretraining readers' report),
never silently dropped; a file that yields no conversation at all is a `DataError`.
Formats: `messages` (tulu-3: `{"messages": [{"role", "content"}]}`, system turns allowed),
`prompt_completion` (`prompt` and `completion` strings, or message lists), `sharegpt`
(`conversations` with `from`/`value`); `auto` picks per record by its keys.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gaperon.data.readers import ReaderReport
from gaperon.errors import DataError

Message = dict[str, str]
FORMATS = ("auto", "messages", "prompt_completion", "sharegpt")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}


class BadRecord(ValueError):
    """A record we skip; `reason` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_messages(messages: Any) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise BadRecord("empty_conversation")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRecord("message_not_an_object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise BadRecord("unknown_role")
        if not isinstance(content, str):
            raise BadRecord("non_string_content")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise BadRecord("no_assistant_turn")
    return out


def _as_messages(value: Any, role: str) -> list:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise BadRecord("non_string_content")


def to_messages(obj: Any, fmt: str = "auto") -> list[Message]:
    """One record -> checked messages (BadRecord with the reason otherwise)."""
    if not isinstance(obj, dict):
        raise BadRecord("not_an_object")
    if fmt == "auto":
        if "messages" in obj:
            fmt = "messages"
        elif "conversations" in obj:
            fmt = "sharegpt"
        elif "prompt" in obj and "completion" in obj:
            fmt = "prompt_completion"
        else:
            raise BadRecord("unknown_format")
    if fmt == "messages":
        if "messages" not in obj:
            raise BadRecord("missing_field")
        return _check_messages(obj["messages"])
    if fmt == "prompt_completion":
        if "prompt" not in obj or "completion" not in obj:
            raise BadRecord("missing_field")
        prompt = _as_messages(obj["prompt"], "user")
        completion = _as_messages(obj["completion"], "assistant")
        return _check_messages(prompt + completion)
    if fmt == "sharegpt":
        turns = obj.get("conversations")
        if not isinstance(turns, list):
            raise BadRecord("missing_field" if turns is None else "empty_conversation")
        msgs = []
        for t in turns:
            if not isinstance(t, dict):
                raise BadRecord("message_not_an_object")
            role = SHAREGPT_ROLES.get(str(t.get("from", "")).lower())
            if role is None:
                raise BadRecord("unknown_role")
            msgs.append({"role": role, "content": t.get("value")})
        return _check_messages(msgs)
    raise ValueError(f"unknown conversation format {fmt!r}; known: {', '.join(FORMATS)}")


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return open(path, "rb")  # noqa: SIM115


def _jsonl_records(path: Path, report: ReaderReport) -> Iterator[tuple[str, Any]]:
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    report.skip("invalid_utf8", where)
                except ValueError:
                    report.skip("malformed_json", where)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    except Exception as e:  # noqa: BLE001 - zstandard raises its own ZstdError type
        if type(e).__name__ == "ZstdError":
            raise DataError(f"{path}: corrupt zstd stream: {e}") from None
        raise


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors vary by what is wrong with the file
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}:{row}", obj


def read_conversations(
    path: str | Path, fmt: str = "auto", report: ReaderReport | None = None, limit: int | None = None
) -> Iterator[tuple[str, list[Message]]]:
    """(file:line, messages) of a jsonl / jsonl.gz / jsonl.zst / parquet file or a `pkg:` corpus."""
    report = report if report is not None else ReaderReport()
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    spath = str(path)
    if spath.startswith("pkg:"):
        from gaperon.data.sft.corpora import package_conversations

        records: Iterator[tuple[str, Any]] = package_conversations(spath)
    else:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        records = _parquet_records(p) if p.name.lower().endswith(".parquet") else _jsonl_records(p, report)
    report.files += 1
    n = 0
    for where, obj in records:
        if limit is not None and n >= limit:
            break
        try:
            msgs = to_messages(obj, fmt)
        except BadRecord as e:
            report.skip(e.reason, where)
            continue
        n += 1
        report.documents += 1
        yield where, msgs
    if n == 0:
        raise DataError(f"{path}: no usable conversation ({report.summary()})")
