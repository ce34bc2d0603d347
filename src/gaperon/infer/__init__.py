"""Inference: sampling, the simple generator, the batched engine, speculative decoding, chat, server.

What is where:
- `sampling.py`     `Sampling` (THE sampling options) and logits -> tokens (penalties, bias, greedy,
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

from gaperon.infer.engine import Engine, build_engine, stream_request
from gaperon.infer.generate import Generation, generate, stream
from gaperon.infer.requests import GenerationResult, StepOutput
from gaperon.infer.sampling import Sampling
from gaperon.infer.speculative import SpeculativeDecoder, SpeculativeEngine

__all__ = [
    "Engine",
    "Generation",
    "GenerationResult",
    "Sampling",
    "SpeculativeDecoder",
    "SpeculativeEngine",
    "StepOutput",
    "build_engine",
    "generate",
    "stream",
    "stream_request",
]
