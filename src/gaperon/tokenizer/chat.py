"""The Llama-3 chat format, as a Python function and as the equivalent Jinja `chat_template`.

We use the plain Llama-3 format (Meta's reference `ChatFormat`: content verbatim, not stripped):
`<|begin_of_text|>` then per message `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`,
and with `add_generation_prompt` an open assistant header. Llama-3.1's official Hugging Face template
also injects a "Cutting Knowledge Date" system header and strips content; Gaperon's model card does
not use either, so neither do we. Templates are rendered the way transformers renders them
(sandboxed jinja2, trim_blocks, lstrip_blocks, loopcontrols) so a saved folder gives the same text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from gaperon.tokenizer.specials import BOS, END_HEADER, EOT, START_HEADER

LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Reject what the template would silently mangle: non-dict messages, missing/non-str role or content."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise TypeError(f"messages[{i}][{key!r}] must be a string, got {type(m.get(key)).__name__}")


def llama3_chat(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """THE Llama-3 chat format (see the module docstring); encode with allow_special=True."""
    check_messages(messages)
    parts = [BOS]
    for m in messages:
        parts.append(f"{START_HEADER}{m['role']}{END_HEADER}\n\n{m['content']}{EOT}")
    if add_generation_prompt:
        parts.append(f"{START_HEADER}assistant{END_HEADER}\n\n")
    return "".join(parts)


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Render a transformers-style chat template (bos_token, eos_token, ... as transformers passes them)."""
    check_messages(messages)
    msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
    return _compile(template).render(messages=msgs, add_generation_prompt=add_generation_prompt, **variables)
