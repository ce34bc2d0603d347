"""Shared helpers: random micro models, a byte tokenizer that fits their 512-token vocabulary, and
a scripted model that emits a chosen token sequence (for stop-string and UTF-8 tests)."""

from __future__ import annotations

import re

import torch
from torch import nn

from gaperon.model import build, get_preset
from gaperon.model.llama import ModelConfig


class ByteTokenizer:
    """UTF-8 bytes as tokens 5..260 plus ChatML specials; ids above 260 alias bytes again, so any
    id a random 512-vocab model emits decodes to something."""

    SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    OFFSET = 5

    def __init__(self) -> None:
        self.bos_id, self.eos_id = 1, 2
        self.stop_ids = frozenset({2, 4})
        self.vocab_size = 261
        self.chat_template = "chatml"

    def encode(
        self, text: str, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        ids = [self.bos_id] if bos else []
        parts = (
            re.split("(" + "|".join(map(re.escape, self.SPECIALS)) + ")", text) if allow_special else [text]
        )
        for part in parts:
            if part in self.SPECIALS:
                ids.append(self.SPECIALS.index(part))
            else:
                ids.extend(b + self.OFFSET for b in part.encode("utf-8"))
        return ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        out, buf = [], bytearray()
        for i in ids:
            i = int(i)
            if i >= self.OFFSET:
                buf.append((i - self.OFFSET) % 256)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special:
                out.append(self.SPECIALS[i])
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def encode_chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), allow_special=True)

    def identity(self) -> str:
        return f"bytes+{self.OFFSET}"


class ShiftedByteTokenizer(ByteTokenizer):
    """Same vocabulary size, other ids (bytes start at 6): a draft with it must be refused."""

    OFFSET = 6


class ScriptedModel(nn.Module):
    """Always predicts script[n] for the n-th generated token (counted from prompt_len)."""

    def __init__(self, script: list[int], prompt_len: int, vocab_size: int = 512, max_seq_len: int = 256):
        super().__init__()
        self.cfg = ModelConfig(
            vocab_size=vocab_size,
            dim=8,
            n_layers=1,
            n_heads=1,
            n_kv_heads=1,
            ffn_dim=8,
            max_seq_len=max_seq_len,
        )
        self.script, self.prompt_len = script, prompt_len
        self.dummy = nn.Parameter(torch.zeros(1))
        self.lm_head = nn.Identity()

    def hidden_states(self, tokens, positions=None, mask=None, cache=None):
        b, t = tokens.shape
        if positions is None:
            positions = torch.arange(t)
        positions = positions.expand(b, t)
        out = torch.zeros(b, t, self.cfg.vocab_size)
        for i in range(b):
            for j in range(t):
                n = int(positions[i, j]) + 1 - self.prompt_len
                target = self.script[n] if 0 <= n < len(self.script) else 2
                out[i, j, target] = 10.0
        return out

    def forward(self, tokens, positions=None, mask=None, cache=None):
        return self.hidden_states(tokens, positions, mask, cache)


def micro_model(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    model = build(get_preset("micro", **overrides))
    model.init_weights(seed)
    return model.eval()
