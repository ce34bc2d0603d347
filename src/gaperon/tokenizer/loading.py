"""Where tokenizers come from: the bundled Llama-3.1 ranks, HF folders/tokenizer.json files, tiktoken files.

Nothing is downloaded: the Llama-3.1 ranks are read from the installed `llama-models` package.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend

from gaperon.errors import ModelFormatError
from gaperon.tokenizer.chat import LLAMA3_CHAT_TEMPLATE
from gaperon.tokenizer.core import SIDECAR, Tokenizer, post_processor_adds_bos
from gaperon.tokenizer.specials import (
    BOS,
    EOS,
    EOT,
    LLAMA3_PATTERN,
    LLAMA3_SPECIALS,
    LLAMA3_STOP,
    PAD,
    START_HEADER,
)
from gaperon.tokenizer.tiktoken_ranks import byte_level_backend, ranks_to_vocab_merges, read_tiktoken_ranks

LLAMA3_NAMES = ("llama3", "llama-3", "llama3.1", "llama-3.1")
# Our pretraining packs each document as its text + EOS, with no BOS (SPEC.md section 2; `gaperon
# tokenize`), so a model trained on our llama3 shards never saw BOS before a document, and its plain
# prompts get none either. Chat turns are another matter: the chat template writes BOS itself.
LLAMA3_ADD_BOS = False

# Role guesses for a bare tokenizer.json, first match wins: (bos, eos, pad, stop tokens, chat template).
_KNOWN_ROLES: tuple[tuple[str | None, str, str | None, tuple[str, ...], str | None], ...] = (
    (BOS, EOS, PAD, LLAMA3_STOP, LLAMA3_CHAT_TEMPLATE),
    (None, "<|im_end|>", None, ("<|endoftext|>",), None),
    (None, "<|endoftext|>", None, (), None),
    ("<s>", "</s>", None, (), None),
)


def llama3_ranks_path() -> Path:
    """The official Llama-3 tiktoken ranks shipped inside the `llama-models` package."""
    try:
        path = Path(str(resources.files("llama_models") / "llama3" / "tokenizer.model"))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the Llama-3.1 ranks come from the PyPI package llama-models: pip install --no-deps llama-models"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed llama-models package")
    return path


def tiktoken_tokenizer(
    path: str | Path, *, name: str = "custom", add_bos: bool = LLAMA3_ADD_BOS
) -> Tokenizer:
    """A Llama-3-style tokenizer from any tiktoken ranks file: Llama-3 regex, 256 specials after the ranks
    (`add_bos`: documents start with BOS; our pretraining's rule by default)."""
    ranks = read_tiktoken_ranks(path)
    vocab, merges = ranks_to_vocab_merges(ranks)
    backend = byte_level_backend(vocab, merges, LLAMA3_PATTERN, LLAMA3_SPECIALS)
    return Tokenizer(
        backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        stop_tokens=LLAMA3_STOP,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        name=name,
        ranks=ranks,
        add_bos=add_bos,
    )


@cache
def llama3_tokenizer() -> Tokenizer:
    """The Llama-3.1 tokenizer (128,256 ids), built offline from Meta's ranks once per process."""
    return tiktoken_tokenizer(llama3_ranks_path(), name="llama3")


# Suffixes of a tokenizer spec that override its BOS rule ("llama3+bos": the Llama-3.1 vocabulary for a
# model trained, as Meta's were, with BOS before each document).
BOS_SUFFIXES = {"+bos": True, "+nobos": False}


def load_tokenizer(spec: str | Path | Tokenizer) -> Tokenizer:
    """ "llama3", a folder with tokenizer.json (+ tokenizer_config.json) or tokenizer.model,
    a tokenizer.json file, or a tiktoken tokenizer.model file; any of them followed by "+bos" or
    "+nobos" to set whether documents and plain prompts start with BOS (otherwise the tokenizer's
    own rule: none for "llama3", what the folder or file records for the others)."""
    if isinstance(spec, Tokenizer):
        return spec
    text = str(spec)
    for suffix, add_bos in BOS_SUFFIXES.items():
        if text.lower().endswith(suffix) and not Path(text).exists():
            return load_tokenizer(text[: -len(suffix)]).with_add_bos(add_bos)
    if isinstance(spec, str) and spec.lower() in LLAMA3_NAMES:
        return llama3_tokenizer()
    path = Path(spec)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return _from_tokenizer_json(path / "tokenizer.json", path)
        if (path / "tokenizer.model").is_file():
            return tiktoken_tokenizer(path / "tokenizer.model", name=path.name)
        raise ModelFormatError(f"{path}: folder has neither tokenizer.json nor tokenizer.model")
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: tokenizer not found (expected 'llama3', a folder or a tokenizer file)"
        )
    if path.suffix == ".json":
        # Settings beside a tokenizer.json (an HF folder) apply; a lone renamed file gets guessed roles.
        return _from_tokenizer_json(path, path.parent if path.name == "tokenizer.json" else None)
    return tiktoken_tokenizer(path, name=path.stem)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _token_name(value: Any) -> str | None:
    """tokenizer_config values are a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _from_tokenizer_json(file: Path, folder: Path | None) -> Tokenizer:
    try:
        backend = Backend.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception from Rust; we add the file
        _read_json(file)  # a clearer message for a truncated or non-JSON file
        raise ModelFormatError(f"{file}: not a tokenizers tokenizer.json ({e})") from None
    config: dict[str, Any] = {}
    sidecar: dict[str, Any] = {}
    stop: list[str] = []
    template = None
    if folder is not None:
        if (folder / "tokenizer_config.json").is_file():
            config = _read_json(folder / "tokenizer_config.json")
        if (folder / SIDECAR).is_file():
            sidecar = _read_json(folder / SIDECAR)
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        stop = _generation_stop_tokens(folder, backend)
    template = config.get("chat_template", template)
    if not isinstance(template, (str, type(None))):
        raise ModelFormatError(
            f"{folder}/tokenizer_config.json: only a single string chat_template is supported"
        )
    bos, eos, pad = (_token_name(config.get(k)) for k in ("bos_token", "eos_token", "pad_token"))
    if eos is None:
        guess = _guess_roles(backend)
        if guess is None:
            raise ModelFormatError(
                f"{file}: cannot tell which token is EOS; put a tokenizer_config.json with "
                f"eos_token beside it"
            )
        bos, eos, pad_guess, guessed_stop, guessed_template = guess
        pad = pad or pad_guess
        stop = stop or list(guessed_stop)
        template = template or guessed_template
    stop = list(sidecar.get("stop_tokens", [])) or stop
    if sidecar.get("stop_tokens") is None and all(
        backend.token_to_id(t) is not None for t in (START_HEADER, EOT)
    ):
        stop = [*stop, *LLAMA3_STOP]  # a Llama-3-family chat ends at any of these, whatever eos_token says
    stop = [t for t in stop if backend.token_to_id(t) is not None]
    add_bos = _bos_rule(backend, bos, config, sidecar)
    name = sidecar.get("name") or (folder.name if folder is not None else file.stem)
    max_len = config.get("model_max_length")
    # transformers writes a huge sentinel when the length is unknown: keep our default then.
    model_max_length = int(max_len) if isinstance(max_len, int) and max_len < 10**9 else 4096
    return Tokenizer(
        backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        stop_tokens=stop,
        chat_template=template,
        name=str(name),
        model_max_length=model_max_length,
        add_bos=add_bos,
    )


def _bos_rule(backend: Backend, bos: str | None, config: dict[str, Any], sidecar: dict[str, Any]) -> bool:
    """Whether this folder's model saw BOS before each document: our sidecar says so when we wrote the
    folder; otherwise transformers' own behaviour decides (the post-processor in tokenizer.json, as
    official Llama-3 folders have, or `add_bos_token: true` for the classes that build one from it)."""
    if bos is None:
        return False
    declared = sidecar.get("add_bos")
    if isinstance(declared, bool):
        return declared
    return post_processor_adds_bos(backend, bos) or config.get("add_bos_token") is True


def _guess_roles(backend: Backend):
    for roles in _KNOWN_ROLES:
        bos, eos = roles[0], roles[1]
        if backend.token_to_id(eos) is not None and (bos is None or backend.token_to_id(bos) is not None):
            pad = roles[2] if roles[2] is not None and backend.token_to_id(roles[2]) is not None else None
            return bos, eos, pad, roles[3], roles[4]
    return None


def _generation_stop_tokens(folder: Path, backend: Backend) -> list[str]:
    """eos_token_id of an HF model folder's generation_config.json (int or list) as token strings."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return []
    ids = _read_json(path).get("eos_token_id")
    ids = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else []
    return [t for t in (backend.id_to_token(i) for i in ids if isinstance(i, int)) if t is not None]
