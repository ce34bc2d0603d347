"""Tokenizers: the Llama-3.1 BPE (offline), any tokenizer.json / tiktoken file, BPE training, chat format.

What is where:
- `specials.py`       the Llama-3 split regex, the 256 special tokens (ids 128000+) and their roles.
- `tiktoken_ranks.py` tiktoken ranks -> byte-level BPE vocab + merges -> a Rust `tokenizers` backend.
- `core.py`           `Tokenizer`: encode/decode (BOS/EOS explicit, special text plain by default),
                      stop ids, chat rendering, `identity()` for data shards, `save()` for transformers.
- `fast_path.py`      an exact tiktoken encoder used by `Tokenizer.encode*` when the backend is provably
                      the same BPE as a rank table (3-5x faster than the Rust HF backend, same ids).
- `chat.py`           `llama3_chat` (THE Llama-3 chat format) and its Jinja twin, rendered like transformers.
- `loading.py`        `llama3_tokenizer()` (cached per process, from the llama-models package) and
                      `load_tokenizer(spec)` for "llama3", HF folders, tokenizer.json and tiktoken files.
- `train_bpe.py`      `train_bpe`: a small BPE of the same design for experiments.
"""

from gaperon.tokenizer.chat import LLAMA3_CHAT_TEMPLATE, llama3_chat, render_chat_template
from gaperon.tokenizer.core import Tokenizer
from gaperon.tokenizer.loading import llama3_tokenizer, load_tokenizer, tiktoken_tokenizer
from gaperon.tokenizer.specials import LLAMA3_PATTERN, LLAMA3_SPECIALS
from gaperon.tokenizer.train_bpe import train_bpe

__all__ = [
    "LLAMA3_CHAT_TEMPLATE",
    "LLAMA3_PATTERN",
    "LLAMA3_SPECIALS",
    "Tokenizer",
    "llama3_chat",
    "llama3_tokenizer",
    "load_tokenizer",
    "render_chat_template",
    "tiktoken_tokenizer",
    "train_bpe",
]
