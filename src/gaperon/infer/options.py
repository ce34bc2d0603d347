"""`Sampling`: THE description of how to generate a reply (validated once, at construction).

It lives apart from the sampler (sampling.py) and imports no torch, so the CLI can refuse a bad
`--temperature` in a fraction of a second, before anything heavy is imported or loaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gaperon.errors import UsageError


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Sampling:
    """How to generate one reply. temperature 0 means greedy (top_k/top_p then do nothing).

    repetition_penalty (1 = off) divides positive logits (multiplies negative ones) of every token
    already in the prompt or the output; presence_penalty subtracts a constant from tokens already
    generated, frequency_penalty subtracts it once per occurrence (both 0 = off, as in the OpenAI
    API). logit_bias adds a value to chosen token ids. logprobs: how many most likely alternatives
    to report beside each generated token's own log-probability (None = report nothing).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("max_new_tokens", _integer(self.max_new_tokens) and self.max_new_tokens >= 0, "an integer >= 0"),
            ("temperature", _number(self.temperature) and self.temperature >= 0, "a finite number >= 0"),
            ("top_k", _integer(self.top_k) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1] (1 = off)"),
            ("seed", self.seed is None or _integer(self.seed), "an integer"),
            ("repetition_penalty", _number(self.repetition_penalty) and self.repetition_penalty > 0, "> 0"),
            (
                "presence_penalty",
                _number(self.presence_penalty) and -2 <= self.presence_penalty <= 2,
                "in [-2, 2]",
            ),
            (
                "frequency_penalty",
                _number(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
                "in [-2, 2]",
            ),
            ("logprobs", self.logprobs is None or (_integer(self.logprobs) and self.logprobs >= 0), ">= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise UsageError(f"{name} must be {what}, got {getattr(self, name)!r}")
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) for s in self.stop):
            raise UsageError(f"stop must be a tuple of strings, got {self.stop!r}")
        for pair in self.logit_bias:
            if not (isinstance(pair, tuple) and len(pair) == 2 and _integer(pair[0]) and _number(pair[1])):
                raise UsageError(f"logit_bias entries must be (token id, number) pairs, got {pair!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether the logits depend on the tokens seen so far (not only on the model)."""
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    def replace(self, **changes: Any) -> Sampling:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_generation_config(cls, config: Mapping[str, Any], **base: Any) -> Sampling:
        """Defaults from a Hugging Face generation_config.json (do_sample false -> greedy)."""
        fields: dict[str, Any] = dict(base)
        if config.get("do_sample") is False:
            fields["temperature"] = 0.0
        elif _number(config.get("temperature")):
            fields["temperature"] = float(config["temperature"])
        if config.get("do_sample") is not False:
            if _number(config.get("top_p")):
                fields["top_p"] = float(config["top_p"])
            if _integer(config.get("top_k")):
                fields["top_k"] = int(config["top_k"])
        if _number(config.get("repetition_penalty")):
            fields["repetition_penalty"] = float(config["repetition_penalty"])
        return cls(**fields)
