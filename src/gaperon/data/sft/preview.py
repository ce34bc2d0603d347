"""`gaperon sft preview`: how examples render and what the model will learn, before any training."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from gaperon.data.readers import ReaderReport
from gaperon.data.sft.formats import read_conversations
from gaperon.data.sft.render import Example, render_batch

OPEN, CLOSE = "[[", "]]"


def load_chat_tokenizer(spec: str):
    """The tokenizer (with its chat template) of a model: `llama3`, an HF folder, a GGUF file or a run."""
    from gaperon.tokenizer import load_tokenizer

    if spec == "llama3":
        return load_tokenizer("llama3")
    path = Path(spec)
    from gaperon.io.loading import model_kind

    kind = model_kind(path)
    if kind == "gguf":
        from gaperon.io.gguf import gguf_tokenizer, open_gguf

        file = open_gguf(path)
        try:
            return gguf_tokenizer(file, str(path), str(file.get("general.name") or path.stem))
        finally:
            file.close()
    if kind == "run":
        for folder in (path / "tokenizer", path.parent.parent / "tokenizer"):
            if folder.is_dir():
                return load_tokenizer(folder)
        from gaperon.errors import ModelFormatError

        raise ModelFormatError(f"{path}: the run has no tokenizer/ folder")
    return load_tokenizer(path)


def marked_text(tokenizer, ex: Example) -> str:
    """The rendered example with learned spans between [[ and ]]."""
    out: list[str] = []
    run: list[int] = []
    learned = 0
    for t, m in zip([*ex.ids, None], [*ex.mask, -1]):
        if m != learned and run:
            text = tokenizer.decode(run)
            out.append(f"{OPEN}{text}{CLOSE}" if learned == 1 else text)
            run = []
        if t is None:
            break
        learned = m
        run.append(t)
    return "".join(out)


def preview(data: str, tokenizer, n: int = 3, fmt: str = "auto", as_json: bool = False) -> Iterator[str]:
    """Lines to print: each of the first `n` examples, then the trained-token fraction of those."""
    report = ReaderReport()
    convs = []
    for where, msgs in read_conversations(data, fmt, report):
        convs.append((where, msgs))
        if len(convs) >= n:
            break
    examples = render_batch(tokenizer, [m for _, m in convs], [w for w, _ in convs])
    total = trained = 0
    for ex in examples:
        total += len(ex.ids)
        trained += ex.trained
        if as_json:
            yield json.dumps(
                {"where": ex.where, "input_ids": ex.ids, "loss_mask": ex.mask, "trained": ex.trained}
            )
        else:
            yield f"--- {ex.where}: {len(ex.ids)} tokens, {ex.trained} learned (between {OPEN} {CLOSE})"
            yield marked_text(tokenizer, ex)
    if not as_json:
        skipped = f"; skipped: {report.summary()}" if report.skipped else ""
        yield f"=== {len(examples)} examples, trained-token fraction {trained / max(total, 1):.3f}{skipped}"
