"""Shared helpers of the evaluate tests: a random micro model and a byte tokenizer that fits it."""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch

from gaperon.model import build, get_preset

FIXTURES = Path(__file__).parent / "fixtures"


class ByteTokenizer:
    """UTF-8 bytes as ids 5..260 plus ChatML specials (enough for lm-eval's tokenisation paths)."""

    SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    OFFSET = 5
    name = "bytes"
    chat_template = "chatml"

    def __init__(self) -> None:
        self.bos_id, self.eos_id = 1, 2
        self.stop_ids = frozenset({2, 4})
        self.vocab_size = 261

    def encode(
        self, text: str, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        ids = [self.bos_id] if bos else []
        pattern = "(" + "|".join(map(re.escape, self.SPECIALS)) + ")"
        for part in re.split(pattern, text) if allow_special else [text]:
            if part in self.SPECIALS:
                ids.append(self.SPECIALS.index(part))
            else:
                ids.extend(b + self.OFFSET for b in part.encode("utf-8"))
        return ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        data = bytearray()
        for i in ids:
            if int(i) >= self.OFFSET:
                data.append((int(i) - self.OFFSET) % 256)
            elif not skip_special:
                data.extend(self.SPECIALS[int(i)].encode())
        return data.decode("utf-8", errors="replace")

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def micro_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build(get_preset("micro"))
    model.init_weights(seed)
    return model.eval()


def random_requests(n_groups: int = 12, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Multiple-choice-like requests: contexts of varied length, each with 1-5 continuations."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(n_groups):
        ctx = [rng.randrange(5, 500) for _ in range(rng.randrange(1, 60))]
        for _ in range(rng.randrange(1, 6)):
            reqs.append((ctx, [rng.randrange(5, 500) for _ in range(rng.randrange(1, 12))]))
    rng.shuffle(reqs)
    return reqs


CORPUS = [
    "Question: Which animal barks? Answer: dog. The cat sat on the mat.",
    "Le chat est sur le tapis. Les chats aiment dormir au soleil, n'est-ce pas ?",
] * 30


def micro_hf_folder(path: Path, seed: int = 0) -> Path:
    """A micro model with a small trained BPE, saved as an HF folder (what `load_model` takes)."""
    from gaperon.io.hf import save_hf
    from gaperon.tokenizer import train_bpe

    tok = train_bpe(CORPUS, 300, special_tokens=4)
    torch.manual_seed(seed)
    model = build(
        get_preset("micro", vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    )
    model.init_weights(seed)
    save_hf(model, tok, path)
    return path
