"""The OpenAI wire format: validate request bodies, shape responses and errors.

Pure functions (no web framework), so every bad-request rule is testable directly and the server
module only routes. Errors follow OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_STOP = 4  # OpenAI's limit on stop sequences
ROLES = ("system", "user", "assistant", "developer", "tool")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ParsedRequest:
    prompt_ids: list[int]
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)  # Engine.add_request keyword arguments


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bad(param: str, message: str, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _get_number(body: dict, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    x = body.get(name)
    if x is None:
        return default
    if not _is_number(x):
        raise _bad(name, f"'{name}' must be a number, got {x!r}", "invalid_type")
    if (x <= lo if lo_open else x < lo) or x > hi:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise _bad(name, f"'{name}' must be in {rng}, got {x!r}", "invalid_value")
    return float(x)


def _get_int(body: dict, name: str, lo: int) -> int | None:
    x = body.get(name)
    if x is None:
        return None
    if not _is_int(x):
        raise _bad(name, f"'{name}' must be an integer, got {x!r}", "invalid_type")
    if x < lo:
        raise _bad(name, f"'{name}' must be >= {lo}, got {x}", "invalid_value")
    return x


def _stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("stop", "'stop' must be a string or a list of strings", "invalid_type")
    if len(stops) > MAX_STOP:
        raise _bad("stop", f"'stop' may hold at most {MAX_STOP} sequences, got {len(stops)}", "invalid_value")
    return [s for s in stops if s]


def _unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad(
            "n", f"only n=1 is supported, got n={n!r}: send separate requests instead", "unsupported_value"
        )
    for name in ("logprobs", "top_logprobs", "echo", "suffix", "tools", "functions"):
        if body.get(name):
            raise _bad(name, f"'{name}' is not supported by this server", "unsupported_parameter")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise _bad("best_of", "only best_of=1 is supported", "unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        x = body.get(name)
        if x is not None and x != 0:
            raise _bad(name, f"'{name}' is not supported by this server (only 0)", "unsupported_value")


def _message_text(m: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad("messages", f"{where} must be an object with 'role' and 'content'", "invalid_type")
    role = m.get("role")
    if role not in ROLES:
        raise _bad(
            "messages", f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", "invalid_value"
        )
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is understood
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _bad("messages", f"{where}.content: only text parts are supported", "unsupported_value")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise _bad("messages", f"{where}.content must be a string", "invalid_type")
    return {"role": "system" if role == "developer" else role, "content": content}


def _chat_prompt(body: dict, tok) -> list[int]:
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages", "missing required parameter: 'messages'", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty list", "invalid_type")
    clean = [_message_text(m, i) for i, m in enumerate(messages)]
    try:
        return tok.encode_chat(clean, add_generation_prompt=True)
    except Exception as e:  # ValueError, TypeError, or the template's own raise_exception (jinja2)
        raise _bad(
            "messages", f"the messages do not fit the model's chat template: {e}", "invalid_value"
        ) from None


def _completion_prompt(body: dict, tok) -> list[int]:
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("prompt", "missing required parameter: 'prompt'", "missing_required_parameter")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise _bad("prompt", "'prompt' is empty", "invalid_value")
        return tok.encode(prompt, bos=_adds_bos(tok) and getattr(tok, "bos_id", None) is not None)
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        vocab = tok.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise _bad("prompt", f"token id {bad[0]} is outside the vocabulary [0, {vocab})", "invalid_value")
        return list(prompt)
    raise _bad(
        "prompt", "'prompt' must be a string or a list of token ids (one prompt per request)", "invalid_type"
    )


def _adds_bos(tok) -> bool:
    """Plain completions start with BOS when the chat template does (Llama-3 style models)."""
    template = getattr(tok, "chat_template", None) or ""
    return "bos_token" in template or "<|begin_of_text|>" in template


def parse_request(body: Any, *, kind: str, model_name: str, tok, max_len: int) -> ParsedRequest:
    """Validate a /v1/chat/completions (kind 'chat') or /v1/completions ('completion') body."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is None:
        raise _bad("model", "missing required parameter: 'model'", "missing_required_parameter")
    if model != model_name:
        raise APIError(
            404,
            f"The model '{model}' does not exist; this server serves '{model_name}'",
            param="model",
            code="model_not_found",
        )
    _unsupported(body)
    temperature = _get_number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _get_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < -1):
        raise _bad(
            "top_k", f"'top_k' must be an integer >= 0 (or -1 for off), got {top_k!r}", "invalid_value"
        )
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _bad("seed", f"'seed' must be an integer, got {seed!r}", "invalid_type")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _bad("stream", "'stream' must be a boolean", "invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options", "'stream_options' must be an object", "invalid_type")
    stops = _stop_strings(body)
    max_tokens = _get_int(body, "max_completion_tokens", 1)
    max_tokens = _get_int(body, "max_tokens", 1) if max_tokens is None else max_tokens
    prompt = _chat_prompt(body, tok) if kind == "chat" else _completion_prompt(body, tok)
    if len(prompt) >= max_len:
        raise _bad(
            "messages" if kind == "chat" else "prompt",
            f"This model's maximum context length is {max_len} tokens, but the prompt has {len(prompt)} tokens",
            "context_length_exceeded",
        )
    room = max_len - len(prompt)
    if max_tokens is None:
        max_tokens = room if kind == "chat" else min(16, room)
    elif max_tokens > room:
        raise _bad(
            "max_tokens",
            f"This model's maximum context length is {max_len} tokens; you requested {len(prompt) + max_tokens} "
            f"({len(prompt)} in the prompt, {max_tokens} for the completion)",
            "context_length_exceeded",
        )
    sampling = {
        "max_new_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": max(0, top_k or 0),
        "seed": seed,
        "stop_strings": stops,
    }
    return ParsedRequest(prompt, max_tokens, bool(stream), bool(options.get("include_usage")), sampling)


# ---- responses ---------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def full_response(kind: str, rid: str, model: str, text: str, finish: str, n_prompt: int, n_out: int) -> dict:
    if kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(n_prompt, n_out),
    }


def chunk(
    kind: str, rid: str, model: str, text: str | None, finish: str | None, *, first: bool = False
) -> dict:
    if kind == "chat":
        delta: dict = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(kind: str, rid: str, model: str, n_prompt: int, n_out: int) -> dict:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": usage(n_prompt, n_out),
    }
