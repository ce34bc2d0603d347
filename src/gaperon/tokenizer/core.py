"""`Tokenizer`: one class over a Rust HF `tokenizers` backend, with the roles (BOS/EOS/PAD/stop ids),
the chat template and a stable identity that the rest of gaperon needs.

Why a wrapper: the backend alone does not know which ids stop generation, which template formats a
chat, or how to refuse special-token text in ordinary documents. Here BOS/EOS are never implicit:
`encode(text)` gives exactly the text's tokens; `bos=True`/`eos=True` or the chat template add them.
Whether a document or plain prompt starts with BOS is one recorded fact, `add_bos` (how the model was
trained; see `gaperon.tokenizer.protocol.prompt_bos`): packing, generation, serving and evaluation
read it, and `save` writes it where transformers reads it (the post-processor in tokenizer.json).
By default special-token text ("<|eot_id|>" inside a web page) is encoded as ordinary text.
The backend is the source of truth (decode, save, transformers); `encode*` runs on tiktoken instead
when fast_path.py proves both give the same ids, because tiktoken is several times faster.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken
from tokenizers import Tokenizer as Backend
from tokenizers import processors

from gaperon.atomic import write_json, write_text
from gaperon.errors import ModelFormatError
from gaperon.tokenizer.chat import render_chat_template
from gaperon.tokenizer.fast_path import ranks_if_equivalent, safe_for_tiktoken, tiktoken_encoding

SIDECAR = "gaperon_tokenizer.json"  # what transformers' files cannot hold: stop tokens, name


class Tokenizer:
    """A byte-level BPE tokenizer with roles, chat template and identity. Treat instances as immutable."""

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token: str | None,
        eos_token: str,
        chat_template: str | None,
        stop_tokens: Sequence[str] = (),
        pad_token: str | None = None,
        name: str = "custom",
        model_max_length: int = 4096,
        ranks: Mapping[bytes, int] | None = None,
        add_bos: bool = False,
    ) -> None:
        """`ranks`: the tiktoken table this backend was built from (enables the exact fast path at once;
        without it, equivalence is checked lazily on the first encode). `add_bos`: documents started
        with BOS when the model was trained (so plain prompts do too)."""
        if add_bos and bos_token is None:
            raise ModelFormatError(f"tokenizer {name!r}: add_bos is set but there is no bos_token")
        _drop_implicit_specials(backend)
        self._backend = backend
        self.name = name
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        self.add_bos = bool(add_bos)
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.bos_id = self._require(bos_token, "bos_token") if bos_token is not None else None
        self.eos_id = self._require(eos_token, "eos_token")
        self.pad_id = self._require(pad_token, "pad_token") if pad_token is not None else None
        self.stop_tokens = tuple(dict.fromkeys([eos_token, *stop_tokens]))
        self.stop_ids = frozenset(self._require(t, "stop_tokens") for t in self.stop_tokens)
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.special_tokens: dict[str, int] = {
            t.content: i for i, t in sorted(backend.get_added_tokens_decoder().items()) if t.special
        }
        self._lock = threading.Lock()
        self._plain: Backend | None = None
        self._identity: str | None = None
        self._ranks = ranks
        self._fast: tiktoken.Encoding | None = None
        self._fast_checked = False

    @classmethod
    def from_backend(
        cls,
        backend: Backend,
        *,
        bos_token: str | None,
        eos_token: str,
        chat_template: str | None,
        stop_tokens: Sequence[str] = (),
        pad_token: str | None = None,
        name: str = "custom",
        model_max_length: int = 4096,
        add_bos: bool = False,
    ) -> Tokenizer:
        """Wrap a backend (takes ownership: a BOS/EOS-adding post-processor is removed, see module doc)."""
        return cls(
            backend,
            bos_token=bos_token,
            eos_token=eos_token,
            chat_template=chat_template,
            stop_tokens=stop_tokens,
            pad_token=pad_token,
            name=name,
            model_max_length=model_max_length,
            add_bos=add_bos,
        )

    def with_add_bos(self, add_bos: bool) -> Tokenizer:
        """The same tokenizer with another BOS rule (for a model trained the other way)."""
        if add_bos and self.bos_token is None:
            raise ModelFormatError(f"tokenizer {self.name!r}: add_bos is set but there is no bos_token")
        out = copy.copy(self)  # through __getstate__: a fresh lock and lazy copies
        out.add_bos = bool(add_bos)
        return out

    def _require(self, token: str, role: str) -> int:
        i = self._backend.token_to_id(token)
        if i is None:
            raise ModelFormatError(f"tokenizer {self.name!r}: {role} {token!r} is not in its vocabulary")
        return i

    # -- pickling (multiprocessing data workers): the lock and lazy copies are rebuilt on demand
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _plain=None, _fast=None, _fast_checked=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        """The Rust tokenizer (special-token text IS matched); do not mutate it."""
        return self._backend

    def _plain_backend(self) -> Backend:
        """A copy that encodes special-token text as ordinary text (the flag is per object, so keep two)."""
        if self._plain is None:
            with self._lock:
                if self._plain is None:
                    plain = Backend.from_str(self._backend.to_str())
                    plain.encode_special_tokens = True
                    self._plain = plain
        return self._plain

    def fast_encoder(self) -> tiktoken.Encoding | None:
        """The tiktoken Encoding on the same ranks when that is provably the same BPE (see
        fast_path.py), else None. Bulk encoders (data packing) call it directly; they must send texts
        that fail `fast_path.safe_for_tiktoken` to `encode`/`encode_batch`, as this class does."""
        if not self._fast_checked:
            with self._lock:
                if not self._fast_checked:
                    ranks = self._ranks if self._ranks is not None else ranks_if_equivalent(self._backend)
                    if ranks is not None:
                        self._ranks = ranks
                        self._fast = tiktoken_encoding(self.name, ranks, self.special_tokens)
                    self._fast_checked = True
        return self._fast

    # Kept until data/pack.py calls fast_encoder(); tests/core/test_layering.py tracks it.

    @property
    def uses_tiktoken(self) -> bool:
        """Whether encode* runs on tiktoken (an exact accelerator) rather than the HF backend."""
        return self.fast_encoder() is not None

    def _hf_encode_batch(self, texts: list[str], allow_special: bool) -> list[list[int]]:
        backend = self._backend if allow_special else self._plain_backend()
        fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        if bos:
            if self.bos_id is None:
                raise ValueError(f"tokenizer {self.name!r} has no BOS token")
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        """Token ids of `text`; special-token text becomes special ids only with allow_special=True."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        fast = self.fast_encoder()
        if fast is not None and safe_for_tiktoken(text):
            ids = fast.encode(text, allowed_special="all") if allow_special else fast.encode_ordinary(text)
        else:
            ids = self._hf_encode_batch([text], allow_special)[0]
        return self._wrap(ids, bos, eos)

    def encode_batch(
        self, texts: Iterable[str], *, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[list[int]]:
        """Encode many texts on all cores (tiktoken's or the HF backend's thread pool)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode_batch: texts[{i}] is a {type(t).__name__}, not a str")
        out: list[list[int]] = [[] for _ in texts]
        fast = self.fast_encoder()
        slow_idx = list(range(len(texts)))
        if fast is not None:
            quick = [i for i, t in enumerate(texts) if safe_for_tiktoken(t)]
            batch = [texts[i] for i in quick]
            threads = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            )
            if allow_special:
                got = fast.encode_batch(batch, num_threads=threads, allowed_special="all")
            else:
                got = fast.encode_ordinary_batch(batch, num_threads=threads)
            for i, ids in zip(quick, got):
                out[i] = ids
            slow_idx = sorted(set(slow_idx) - set(quick))
        if slow_idx:
            for i, ids in zip(slow_idx, self._hf_encode_batch([texts[i] for i in slow_idx], allow_special)):
                out[i] = ids
        return [self._wrap(ids, bos, eos) for ids in out]

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if i < 0 or i >= self.vocab_size)
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return self._backend.decode(ids, skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._backend.id_to_token(i)

    # -- chat
    def template_variables(self) -> dict[str, str]:
        """What transformers passes to a chat template (its special_tokens_map)."""
        names = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token}
        return {k: v for k, v in names.items() if v is not None}

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        if self.chat_template is None:
            raise ModelFormatError(
                f"tokenizer {self.name!r} has no chat template (tokenizer_config.json chat_template or "
                "chat_template.jinja); use plain prompts instead of chat messages"
            )
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            **self.template_variables(),
        )

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Ids of the rendered chat (the template writes BOS itself; control tokens are matched)."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return self.encode(text, allow_special=True)

    # -- identity and export
    def identity(self) -> str:
        """sha256 of vocab + merges + added tokens (roles, template and pre-tokenizer are not part of it).

        Data shards record it so that a run refuses shards tokenized with a different vocabulary.
        """
        if self._identity is None:
            data = json.loads(self._backend.to_str())
            model = data["model"]
            vocab = sorted(model.get("vocab", {}).items(), key=lambda kv: kv[1])
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            added = [f"{t['id']}\t{t['content']}\t{int(t['special'])}" for t in data.get("added_tokens", [])]
            lines = [
                f"type\t{model.get('type')}",
                *(f"{i}\t{t}" for t, i in vocab),
                "merges",
                *merges,
                "added",
                *added,
            ]
            self._identity = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
        return self._identity

    def save(self, folder: str | Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ our sidecar) into `folder`.

        Each file is written atomically; other files already in the folder (model weights) are kept.
        The result loads with `transformers.AutoTokenizer.from_pretrained(folder)` offline and encodes
        a plain prompt as `generate` does: BOS first exactly when `add_bos` says so (a post-processor in
        tokenizer.json, which is what transformers' fast tokenizers apply, and `add_bos_token` for
        the classes that read that). A chat template that writes BOS itself is then rendered with
        `tokenize=False` and encoded with `add_special_tokens=False`, as transformers documents.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        roles = self.template_variables()
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **roles,
            "add_bos_token": self.add_bos,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length,
            "model_input_names": ["input_ids", "attention_mask"],
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        write_text(folder / "tokenizer.json", self._exported_backend().to_str(pretty=False))
        write_json(folder / "tokenizer_config.json", config)
        write_json(folder / "special_tokens_map.json", roles)
        write_json(
            folder / SIDECAR,
            {
                "name": self.name,
                "stop_tokens": list(self.stop_tokens),
                "identity": self.identity(),
                "add_bos": self.add_bos,
            },
        )
        return folder

    def _exported_backend(self) -> Backend:
        """The backend as transformers should see it: with a post-processor that puts BOS first
        when `add_bos` says so (the same shape as the official Llama-3 tokenizer.json)."""
        if not self.add_bos:
            return self._backend
        assert self.bos_token is not None and self.bos_id is not None  # checked in __init__
        out = Backend.from_str(self._backend.to_str())
        bos = self.bos_token
        template = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, self.bos_id)]
        )
        kept = out.post_processor
        out.post_processor = template if kept is None else processors.Sequence([kept, template])
        return out

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"bos={self.bos_id}, eos={self.eos_id}, add_bos={self.add_bos})"
        )


def post_processor_adds_bos(backend: Backend, bos_token: str | None) -> bool:
    """Whether the backend's post-processor puts `bos_token` first in a single sequence (the official
    Llama-3 tokenizer.json does): what transformers' fast tokenizer does with it by default."""
    if bos_token is None or backend.post_processor is None:
        return False
    data = json.loads(backend.to_str()).get("post_processor") or {}
    for proc in data.get("processors", [data]):
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            first = single[0] if single else {}
            return first.get("SpecialToken", {}).get("id") == bos_token
        if proc.get("type") in ("BertProcessing", "RobertaProcessing"):
            return proc.get("cls", [None])[0] == bos_token
    return False


def _drop_implicit_specials(backend: Backend) -> None:
    """Remove a post-processor that inserts BOS/EOS (e.g. the official Llama-3 TemplateProcessing)."""
    post = backend.post_processor
    if post is None or isinstance(post, processors.ByteLevel):
        return
    data = json.loads(backend.to_str()).get("post_processor") or {}
    kept = [p for p in data.get("processors", [data]) if p.get("type") == "ByteLevel"]
    backend.post_processor = (
        processors.ByteLevel(trim_offsets=bool(kept[0].get("trim_offsets"))) if kept else None
    )
