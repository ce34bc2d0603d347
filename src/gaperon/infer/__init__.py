"""Inference: sampling, the simple generator, the batched engine, speculative decoding, chat, server.

What is where:
- `sampling.py`     logits -> tokens (greedy, temperature, top-k, top-p), one seeded generator per request.
- `text.py`         ids -> streamed text: whole UTF-8 characters only, stop strings held back and cut.
- `generate.py`     `generate` / `stream`: one sequence, growing KV cache (the reference implementation).
- `engine.py`       `Engine`: static KV cache, batched prefill + decode, continuous batching, CUDA graphs.
- `speculative.py`  draft-then-verify decoding (`SpeculativeDecoder`, `SpeculativeEngine`).
- `chat.py`         multi-turn `ChatSession` and the terminal loop of `gaperon chat`.
- `openai_api.py`   OpenAI request validation, response and error shapes.
- `engine_loop.py`  the background thread that owns the engine for the server.
- `server.py`       FastAPI app of `gaperon serve` (imported on demand: it needs fastapi).
- `commands.py`     the functions behind `gaperon generate | chat | serve`.
"""

from gaperon.infer.engine import Engine, StepOutput
from gaperon.infer.generate import Generation, GenerationResult, generate, stream
from gaperon.infer.sampling import SamplingParams
from gaperon.infer.speculative import SpeculativeDecoder, SpeculativeEngine

__all__ = [
    "Engine",
    "Generation",
    "GenerationResult",
    "SamplingParams",
    "SpeculativeDecoder",
    "SpeculativeEngine",
    "StepOutput",
    "generate",
    "stream",
]
