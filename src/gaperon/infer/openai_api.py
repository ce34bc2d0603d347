"""The OpenAI wire format: validate request bodies, shape responses and errors.

Pure functions (no web framework), so every bad-request rule is testable directly and the server
module only routes. Errors follow OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gaperon.errors import ChatFormatError
from gaperon.infer.chat import encode_messages
from gaperon.infer.requests import TokenLogprob
from gaperon.infer.sampling import Sampling
from gaperon.tokenizer.protocol import TextTokenizer, prompt_bos

MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_N = 16  # choices per request
MAX_LOGPROBS = 20  # alternatives per token (vLLM's default limit)
MAX_PROMPTS = 64  # prompts in one /v1/completions batch
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
    prompts: list[list[int]]  # one or more prompts (a /v1/completions batch); each gets n choices
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    echo: bool = False  # completions: the prompt's text (and logprobs) come before the completion
    logprobs: int | None = None  # alternatives reported per token (None = no logprobs)
    prompt_texts: list[str | None] | None = None  # text prompts as given (what echo returns)

    @property
    def prompt_ids(self) -> list[int]:
        return self.prompts[0]

    @property
    def echo_logprobs(self) -> int | None:
        """How many alternatives to report for the prompt's own tokens (echo with logprobs)."""
        return self.logprobs if self.echo and self.logprobs is not None else None


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
    for name in ("suffix", "tools", "functions"):
        if body.get(name):
            raise _bad(name, f"'{name}' is not supported by this server", "unsupported_parameter")


def _n_and_best_of(body: dict) -> int:
    n = _get_int(body, "n", 1)
    n = 1 if n is None else n
    if n > MAX_N:
        raise _bad("n", f"'n' must be <= {MAX_N}, got {n}", "invalid_value")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise _bad("best_of", "only best_of equal to n is supported", "unsupported_value")
    return n


def _logprobs(body: dict, kind: str) -> int | None:
    """Completions: logprobs = number of alternatives (0..20); chat: logprobs = bool + top_logprobs."""
    if kind == "completion":
        x = _get_int(body, "logprobs", 0)
        if x is not None and x > MAX_LOGPROBS:
            raise _bad("logprobs", f"'logprobs' must be <= {MAX_LOGPROBS}, got {x}", "invalid_value")
        return x
    flag = body.get("logprobs")
    if flag is not None and not isinstance(flag, bool):
        raise _bad("logprobs", "'logprobs' must be a boolean", "invalid_type")
    top = _get_int(body, "top_logprobs", 0)
    if top is not None and top > MAX_LOGPROBS:
        raise _bad("top_logprobs", f"'top_logprobs' must be <= {MAX_LOGPROBS}, got {top}", "invalid_value")
    if top is not None and not flag:
        raise _bad("top_logprobs", "'top_logprobs' needs 'logprobs': true", "invalid_value")
    return (top or 0) if flag else None


def _logit_bias(body: dict, vocab: int) -> tuple[tuple[int, float], ...]:
    bias = body.get("logit_bias")
    if bias is None:
        return ()
    if not isinstance(bias, dict):
        raise _bad("logit_bias", "'logit_bias' must be an object {token id: bias}", "invalid_type")
    out = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise _bad("logit_bias", f"'logit_bias' key {key!r} is not a token id", "invalid_value") from None
        if not 0 <= token < vocab or not _is_number(value) or not -100 <= value <= 100:
            raise _bad(
                "logit_bias",
                f"'logit_bias' needs ids in [0, {vocab}) and biases in [-100, 100], got {key}: {value!r}",
                "invalid_value",
            )
        out.append((token, float(value)))
    return tuple(out)


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


def chat_prompt_ids(body: dict, tok: TextTokenizer) -> list[int]:
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages", "missing required parameter: 'messages'", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty list", "invalid_type")
    clean = [_message_text(m, i) for i, m in enumerate(messages)]
    try:
        return encode_messages(tok, clean)
    except ChatFormatError as e:
        raise _bad(
            "messages", f"the messages do not fit the model's chat template: {e}", "invalid_value"
        ) from None


def encode_completion_prompt(tok: TextTokenizer, text: str) -> list[int]:
    """A /v1/completions text prompt, tokenized as vLLM does: special-token text ("<|im_start|>")
    becomes the special id, and BOS comes first when the tokenizer's rule says so (never twice)."""
    ids = tok.encode(text, allow_special=True)
    bos = tok.bos_id
    if prompt_bos(tok) and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def _one_prompt(prompt: Any, tok: TextTokenizer) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise _bad("prompt", "'prompt' is empty", "invalid_value")
        return encode_completion_prompt(tok, prompt)
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        vocab = tok.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise _bad("prompt", f"token id {bad[0]} is outside the vocabulary [0, {vocab})", "invalid_value")
        return list(prompt)
    raise _bad(
        "prompt", "'prompt' must be a string, a list of token ids, or a list of either", "invalid_type"
    )


def _completion_prompts(body: dict, tok: TextTokenizer) -> list[list[int]]:
    prompt = body.get("prompt")
    if prompt is None:
        raise _bad("prompt", "missing required parameter: 'prompt'", "missing_required_parameter")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise _bad(
                "prompt", f"at most {MAX_PROMPTS} prompts per request, got {len(prompt)}", "invalid_value"
            )
        return [_one_prompt(p, tok) for p in prompt]  # a batch of prompts
    return [_one_prompt(prompt, tok)]


def _sampling_fields(body: dict, defaults: Sampling, vocab: int) -> dict[str, Any]:
    """The sampling options of a request body (OpenAI names and ranges); left out -> `defaults`."""
    fields: dict[str, Any] = {
        "temperature": _get_number(body, "temperature", defaults.temperature, 0.0, 2.0),
        "top_p": _get_number(body, "top_p", defaults.top_p, 0.0, 1.0, lo_open=True),
        "presence_penalty": _get_number(body, "presence_penalty", defaults.presence_penalty, -2.0, 2.0),
        "frequency_penalty": _get_number(body, "frequency_penalty", defaults.frequency_penalty, -2.0, 2.0),
        "repetition_penalty": _get_number(
            body, "repetition_penalty", defaults.repetition_penalty, 0.0, 10.0, lo_open=True
        ),
        "logit_bias": _logit_bias(body, vocab),
        "stop": tuple(_stop_strings(body)),
    }
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < -1):
        raise _bad(
            "top_k", f"'top_k' must be an integer >= 0 (or -1 for off), got {top_k!r}", "invalid_value"
        )
    fields["top_k"] = defaults.top_k if top_k is None else max(0, top_k)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _bad("seed", f"'seed' must be an integer, got {seed!r}", "invalid_type")
    fields["seed"] = seed
    return fields


def _max_tokens(body: dict, kind: str, prompts: list[list[int]], max_len: int, echo: bool) -> int:
    max_tokens = _get_int(body, "max_completion_tokens", 1)
    max_tokens = _get_int(body, "max_tokens", 0 if echo else 1) if max_tokens is None else max_tokens
    longest = max(len(p) for p in prompts)
    if longest >= max_len:
        raise _bad(
            "messages" if kind == "chat" else "prompt",
            f"This model's maximum context length is {max_len} tokens, but the prompt has {longest} tokens",
            "context_length_exceeded",
        )
    room = max_len - longest
    if max_tokens is None:
        return room if kind == "chat" else min(16, room)
    if max_tokens > room:
        raise _bad(
            "max_tokens",
            f"This model's maximum context length is {max_len} tokens; you requested {longest + max_tokens} "
            f"({longest} in the prompt, {max_tokens} for the completion)",
            "context_length_exceeded",
        )
    return max_tokens


def parse_request(
    body: Any,
    *,
    kind: str,
    model_name: str,
    tok: TextTokenizer,
    max_len: int,
    defaults: Sampling | None = None,
) -> ParsedRequest:
    """Validate a /v1/chat/completions (kind 'chat') or /v1/completions ('completion') body.

    defaults: the sampling a request gets for what it leaves out (the model's generation config)."""
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
    defaults = defaults or Sampling(temperature=1.0)
    fields = _sampling_fields(body, defaults, tok.vocab_size)
    n = _n_and_best_of(body)
    logprobs = _logprobs(body, kind)
    echo = body.get("echo", False) if kind == "completion" else False
    if not isinstance(echo, bool):
        raise _bad("echo", "'echo' must be a boolean", "invalid_type")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _bad("stream", "'stream' must be a boolean", "invalid_type")
    if stream and (n > 1 or echo or logprobs is not None):
        raise _bad("stream", "streaming supports n=1 without echo or logprobs only", "unsupported_value")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options", "'stream_options' must be an object", "invalid_type")
    prompts = [chat_prompt_ids(body, tok)] if kind == "chat" else _completion_prompts(body, tok)
    if stream and len(prompts) > 1:
        raise _bad("stream", "streaming supports one prompt per request", "unsupported_value")
    fields["max_new_tokens"] = _max_tokens(body, kind, prompts, max_len, echo)
    fields["logprobs"] = logprobs
    texts = _prompt_texts(body) if kind == "completion" else None
    return ParsedRequest(
        prompts,
        Sampling(**fields),
        bool(stream),
        bool(options.get("include_usage")),
        n,
        echo,
        logprobs,
        texts,
    )


def _prompt_texts(body: dict) -> list[str | None]:
    """The text of each (already validated) completion prompt; None for token-id prompts."""
    prompt = body["prompt"]
    batch = (
        prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt)
        else [prompt]
    )
    return [p if isinstance(p, str) else None for p in batch]


# ---- responses ---------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class ChoiceResult:
    """One finished choice: the engine's tokens (with logprobs when asked) and, with echo, the prompt."""

    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[TokenLogprob]
    prompt_ids: list[int]
    prompt_logprobs: list[TokenLogprob | None] | None = None


def _piece(tok: TextTokenizer, token: int) -> str:
    return tok.decode([token], skip_special=False)


def completion_logprobs(tok: TextTokenizer, c: ChoiceResult, echo: bool) -> dict[str, list[Any]]:
    """The legacy completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset;
    with echo the prompt's tokens come first (the very first has no logprob: null)."""
    pairs: list[tuple[int, TokenLogprob | None]] = []
    if echo:
        prompt_lps = c.prompt_logprobs or [None] * len(c.prompt_ids)
        pairs += list(zip(c.prompt_ids, prompt_lps))
    pairs += list(zip(c.token_ids, c.logprobs))
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = 0
    for token, lp in pairs:
        piece = _piece(tok, token)
        out["tokens"].append(piece)
        out["text_offset"].append(offset)
        offset += len(piece)
        if lp is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(lp[0])
        top: dict[str, float] = {}
        for i, v in lp[1]:  # most likely first: ids that decode to the same text keep the best value
            top.setdefault(_piece(tok, i), v)
        top.setdefault(piece, lp[0])  # the chosen token is always listed, as vLLM does
        out["top_logprobs"].append(top)
    return out


def chat_logprobs(tok: TextTokenizer, c: ChoiceResult) -> dict[str, list[dict[str, Any]]]:
    def entry(token: int, lp: float) -> dict[str, Any]:
        piece = _piece(tok, token)
        return {"token": piece, "logprob": lp, "bytes": list(piece.encode("utf-8"))}

    content = []
    for token, (lp, top) in zip(c.token_ids, c.logprobs):
        content.append({**entry(token, lp), "top_logprobs": [entry(i, v) for i, v in top]})
    return {"content": content}


def full_response(
    kind: str,
    rid: str,
    model: str,
    choices: list[ChoiceResult],
    tok: TextTokenizer,
    parsed: ParsedRequest,
) -> dict[str, Any]:
    out = []
    for i, c in enumerate(choices):
        if kind == "chat":
            lps = chat_logprobs(tok, c) if parsed.logprobs is not None else None
            out.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": lps,
                    "finish_reason": c.finish_reason,
                }
            )
            continue
        given = parsed.prompt_texts[i // parsed.n] if parsed.prompt_texts else None
        prompt_text = given if given is not None else tok.decode(c.prompt_ids, skip_special=False)
        text = prompt_text + c.text if parsed.echo else c.text
        lps = completion_logprobs(tok, c, parsed.echo) if parsed.logprobs is not None else None
        out.append({"index": i, "text": text, "logprobs": lps, "finish_reason": c.finish_reason})
    n_prompt = sum(len(p) for p in parsed.prompts)
    n_out = sum(len(c.token_ids) for c in choices)
    return {
        "id": rid,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": out,
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
