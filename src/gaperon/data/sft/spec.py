"""The recipe fields of an SFT phase's data (light: recipes load without torch or numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class SFTSource:
    # A jsonl / jsonl.gz / jsonl.zst / parquet file, or pkg:chitchat, pkg:chatterbot/<language>.
    path: str
    format: Literal["auto", "messages", "prompt_completion", "sharegpt"] = "auto"
    limit: int | None = None  # the first N usable conversations
    repeat: int = 1  # upsample (e.g. a small identity set)


@dataclass
class SFTDataSpec:
    sources: list[SFTSource] = field(default_factory=list)
    # Examples longer than seq_len + 1 tokens: `right` cuts their end, `drop` drops them. Either
    # way an example left with no learned token is dropped and counted.
    truncation: Literal["right", "drop"] = "right"
    packing: bool = True  # best-fit-decreasing packing; false: one example per row (padded)
