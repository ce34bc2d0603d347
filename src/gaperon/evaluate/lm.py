"""`GaperonLM`: lm-eval's model interface over our model, scorer and generation.

Registered as `gaperon`, so `lm_eval --model gaperon --model_args pretrained=MODEL` (through the
`lm_eval.models` entry point) and `lm_eval.simple_evaluate(model=GaperonLM(...))` both work. MODEL is
anything `gaperon.io.loading.load_model` takes. Tokenisation of (context, continuation) pairs is
lm-eval's own (`TemplateLM._encode_pair`), so requests split into tokens exactly as for its `hf`
model; scoring goes through `gaperon.evaluate.scorer` (prefix sharing, batch invariance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from gaperon.evaluate import scorer
from gaperon.tokenizer.protocol import prompt_bos

DEFAULT_BATCH = 64


def generate_text(
    model, tok, prompt_ids: Sequence[int], *, max_new_tokens: int, stop: Sequence[str], temperature: float
) -> str:
    """The one place evaluation calls the inference engine (its API is still moving)."""
    from gaperon.infer.generate import generate
    from gaperon.infer.sampling import Sampling

    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, stop=tuple(stop))
    return generate(model, tok, list(prompt_ids), sampling).text


def _batch_size(value: Any) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH
    n = int(value)
    if n < 1:
        raise ValueError(f"batch_size must be >= 1, got {value!r}")
    return n


def _device(device: str | None) -> str:
    """lm-eval's command line asks for cuda by default: fall back to the CPU when there is none."""
    import torch

    if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@register_model("gaperon")
class GaperonLM(TemplateLM):
    """lm-eval model over a gaperon model. Pass `pretrained` (a path) or `model` + `tokenizer`."""

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int | str | None = DEFAULT_BATCH,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        **_ignored: Any,  # lm-eval passes max_batch_size and others every model may not use
    ) -> None:
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ValueError("GaperonLM needs pretrained=PATH or model= and tokenizer=")
            from gaperon.io.loading import load_model

            loaded = load_model(pretrained, device=_device(device), dtype=dtype)
            model, tokenizer = loaded.model, loaded.tokenizer
            self._name = str(pretrained)
        else:
            self._name = getattr(tokenizer, "name", "model")
        if tokenizer is None:
            raise ValueError("GaperonLM: the model comes without a tokenizer; pass tokenizer=")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length or model.cfg.max_seq_len)
        self.max_gen_toks = int(max_gen_toks)

    # -- tokens
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_id)

    @property
    def prefix_token_id(self) -> int:
        """What precedes a document in training: BOS where the tokenizer's rule puts one, else the
        previous document's EOS (scoring from an empty context, and the rolling windows' first token)."""
        return int(self.tokenizer.bos_id) if prompt_bos(self.tokenizer) else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_kwargs: Any) -> list[int]:
        """As lm-eval's `hf` model on our exported folder: special-token text (from a chat template)
        becomes its id, and BOS comes first when the tokenizer's rule says so, unless the caller says
        add_special_tokens=False or the text already starts with it."""
        ids = self.tokenizer.encode(string, allow_special=True)
        bos = self.tokenizer.bos_id
        if add_special_tokens is not False and prompt_bos(self.tokenizer) and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    # -- chat
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name", self._name)).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # -- scoring
    def _score(self, pairs: list[tuple[list[int], list[int]]], desc: str, disable_tqdm: bool):
        bar = tqdm(total=len(pairs), desc=desc, disable=disable_tqdm or self.rank != 0)
        try:
            return scorer.score(
                self.model, pairs, batch_size=self.batch_size, max_len=self.max_length, progress=bar.update
            )
        finally:
            bar.close()

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **_kwargs: Any):
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        out = []
        for req, s in zip(requests, self._score(pairs, "loglikelihood", disable_tqdm)):
            out.append((s.logprob, s.is_greedy))
            if req[0] is not None:
                self.cache_hook.add_partial("loglikelihood", req[0], (s.logprob, s.is_greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for i, req in enumerate(requests):
            (text,) = req.args
            ids = self.tok_encode(text, add_special_tokens=False)  # the prefix token stands for BOS
            windows = scorer.rolling_windows(ids, self.max_length, self.prefix_token_id)
            pairs += windows
            owners += [i] * len(windows)
        totals = [0.0] * len(requests)
        for owner, s in zip(owners, self._score(pairs, "loglikelihood_rolling", disable_tqdm)):
            totals[owner] += s.logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    # -- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str] = []
        eos_text = self.tokenizer.decode([self.eot_token_id])
        for req in tqdm(requests, desc="generate_until", disable=disable_tqdm or self.rank != 0):
            context, gen_kwargs = req.args
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            if isinstance(until, str):
                until = [until]
            until = [*until, eos_text] if eos_text not in until else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            ids = (
                self.tok_encode(context)[-(self.max_length - max_new) :] if max_new < self.max_length else []
            )
            text = generate_text(
                self.model, self.tokenizer, ids, max_new_tokens=max_new, stop=until, temperature=temperature
            )
            for stop in until:  # stop strings are cut as lm-eval's hf model does
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out
