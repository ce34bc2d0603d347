"""Inference: sampling, the simple generator, the batched engine, speculative decoding, chat, server.

What is where:
- `options.py`      `Sampling`: THE sampling options (no torch: the CLI checks them instantly).
- `sampling.py`     logits -> tokens (penalties, bias, greedy,
                    temperature, top-k, top-p), one seeded generator per request.
- `text.py`         ids -> streamed text: whole UTF-8 characters only, stop strings held back and cut.
- `requests.py`     request validation and state, results, the growing KV cache, prompt logprobs.
- `speculative.py`  draft-then-verify decoding (`SpeculativeDecoder`, `SpeculativeEngine`).
- `generate.py`     `generate` / `stream`: one sequence, growing KV cache (the reference, test oracle).
- `engine.py`       `Engine`: static KV cache, batched prefill + decode, continuous batching, CUDA graphs;
                    `build_engine`, `stream_request` (what the verbs run).

Imports flow one way: sampling, text <- requests <- speculative <- generate, engine.
- `chat.py`         multi-turn `ChatSession` and the terminal loop of `gaperon chat`.
- `openai_api.py`   OpenAI request validation, response and error shapes.
- `engine_loop.py`  the background thread that owns the engine for the server.
- `server.py`       FastAPI app of `gaperon serve` (imported on demand: it needs fastapi).
- `commands.py`     the functions behind `gaperon generate | chat | serve`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use: `gaperon generate --temperature -1` must not wait for torch to refuse it.
_WHERE = {
    "Engine": "engine",
    "build_engine": "engine",
    "stream_request": "engine",
    "Generation": "generate",
    "generate": "generate",
    "stream": "generate",
    "GenerationResult": "requests",
    "StepOutput": "requests",
    "Sampling": "options",
    "SpeculativeDecoder": "speculative",
    "SpeculativeEngine": "speculative",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gaperon.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gaperon.infer.{_WHERE[name]}"), name)
