"""The Llama-3.1 constants: split regex, the 256 special tokens and which of them play which role.

Names follow the Llama-3.1 Hugging Face release (what Gaperon checkpoints ship): ids 128005 and
128011 are `<|reserved_special_token_2|>` / `<|reserved_special_token_3|>`. (llama-models 0.3.0
calls them `<|step_id|>` / `<|image|>`, a Llama-3.2 renaming; the ids are the same.)
"""

from __future__ import annotations

# The Llama-3 pre-tokenizer split regex (llama_models/llama3/tokenizer.py, `pat_str`).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

NUM_LLAMA3_SPECIALS = 256

_NAMED = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}


def _llama3_specials() -> tuple[str, ...]:
    out: list[str] = []
    reserved = 0
    for i in range(NUM_LLAMA3_SPECIALS):
        if i in _NAMED:
            out.append(_NAMED[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return tuple(out)


# In id order: special token i gets id (number of BPE ranks) + i, i.e. 128000 + i for Llama-3.
LLAMA3_SPECIALS: tuple[str, ...] = _llama3_specials()

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|finetune_right_pad_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
# Generation stops at any of these (Meta's reference `stop_tokens`).
LLAMA3_STOP = (EOS, EOM, EOT)
