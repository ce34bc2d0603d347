"""Conversations -> token ids + an assistant-only loss mask, both taken from one rendering.

The whole conversation is rendered once with the model's chat template and tokenized once (with
character offsets); the ids are exactly those of `apply_chat_template(messages)`. Each assistant
turn's character span is found by rendering prefixes: the text of `messages[:i]` with the
generation prompt must be a prefix of the text of `messages[:i+1]`, itself a prefix of the whole.
A token is trained when it starts inside an assistant span, up to and including the span's last
end-of-turn (stop) token: the template's separator after it (ChatML's newline) is not learned.
A template for which these prefixes do not hold, or whose assistant span holds no end-of-turn
token, cannot mark assistant turns: that is a `TemplateSpanError`, never a silent all-token loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gaperon.errors import DataError

IGNORE = -100


class TemplateSpanError(DataError):
    """The chat template cannot mark assistant spans (no stable prefixes or no end-of-turn token)."""


@dataclass
class Example:
    ids: list[int]
    mask: list[int]  # 1 where the token is learned (assistant content and its end-of-turn token)
    where: str = ""

    @property
    def trained(self) -> int:
        return sum(self.mask)


def _render(tokenizer, messages: Sequence[dict], agp: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=agp)


def assistant_char_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of each assistant turn in it."""
    full = _render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
        if not upto.startswith(before) or not full.startswith(upto):
            raise TemplateSpanError(
                f"the chat template cannot mark assistant spans: rendering turn {i} is not a prefix of "
                "the whole conversation (the template rewrites earlier turns); refusing to train on "
                "every token"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def render_batch(
    tokenizer, conversations: Sequence[Sequence[dict]], wheres: Sequence[str] = ()
) -> list[Example]:
    """Render and tokenize many conversations (tokenization on all cores)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise TemplateSpanError(f"tokenizer {getattr(tokenizer, 'name', '?')!r} has no chat template")
    texts, all_spans = [], []
    for msgs in conversations:
        text, spans = assistant_char_spans(tokenizer, msgs)
        texts.append(text)
        all_spans.append(spans)
    encodings = tokenizer.backend.encode_batch(texts, add_special_tokens=False)
    stop = tokenizer.stop_ids
    out = []
    for k, (enc, spans) in enumerate(zip(encodings, all_spans)):
        ids = list(enc.ids)
        starts = [s for s, _ in enc.offsets]
        mask = [0] * len(ids)
        j = 0
        for a, b in spans:
            while j < len(ids) and starts[j] < a:
                j += 1
            turn = []
            while j < len(ids) and starts[j] < b:
                turn.append(j)
                j += 1
            ends = [t for t in turn if ids[t] in stop]
            if not ends:
                raise TemplateSpanError(
                    f"{wheres[k] if k < len(wheres) else f'conversation {k}'}: the chat template ends an "
                    "assistant turn with no end-of-turn token (stop tokens "
                    f"{sorted(stop)}); cannot mark what to learn"
                )
            for t in turn:
                if t <= ends[-1]:
                    mask[t] = 1
        out.append(Example(ids, mask, wheres[k] if k < len(wheres) else ""))
    return out


def render_example(tokenizer, messages: Sequence[dict]) -> Example:
    return render_batch(tokenizer, [messages])[0]


def truncate(ex: Example, max_tokens: int, policy: str) -> Example | None:
    """Fit an example into `max_tokens`: `right` cuts the end, `drop` drops long examples.
    None when nothing trainable is left (the caller counts it)."""
    if len(ex.ids) > max_tokens:
        if policy == "drop":
            return None
        ex = Example(ex.ids[:max_tokens], ex.mask[:max_tokens], ex.where)
    # The first token is never a target (nothing precedes it inside the example).
    if sum(ex.mask[1:]) == 0:
        return None
    return ex


def labels_for(ids: Sequence[int], mask: Sequence[int]) -> list[int]:
    """Next-token labels of an unpacked example: label[i] = ids[i+1] if that token is learned."""
    return [ids[i + 1] if mask[i + 1] else IGNORE for i in range(len(ids) - 1)]
