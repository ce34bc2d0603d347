"""Saving for transformers, loading every supported source, and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizer_helpers import SMALL_TOKENS, write_ranks

TEXTS = [
    "Hello world.",
    "Bonjour, ça va ?  \n\n  très bien\r\n",
    "def f():\n\treturn 42  # 🙂",
    "plain <|eot_id|> text",
    "",
]


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory) -> Path:
    return tok.save(tmp_path_factory.mktemp("saved"))


def test_save_writes_expected_files(tok, saved):
    names = {p.name for p in saved.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert not any(n.startswith(".") for n in names)  # no temp leftovers
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["bos_token"] == "<|begin_of_text|>" and config["eos_token"] == "<|end_of_text|>"
    assert config["chat_template"] == tok.chat_template


def test_save_keeps_other_files(tok, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    tok.save(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"


def test_autotokenizer_parity(tok, saved):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(str(saved))
    assert len(hf) == tok.vocab_size
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    for text in TEXTS:
        ours = tok.encode(text, allow_special=True)
        assert hf(text)["input_ids"] == ours  # no implicit BOS
        assert hf.decode(ours) == text
    assert hf.batch_decode([tok.encode("Salut à toi")]) == ["Salut à toi"]


def test_load_folder_round_trip(tok, saved):
    from gaperon.tokenizer import load_tokenizer

    again = load_tokenizer(saved)
    assert again.uses_tiktoken  # recognised as the same BPE as the ranks: exact fast path
    assert again.identity() == tok.identity()
    assert (again.bos_id, again.eos_id, again.pad_id, again.stop_ids) == (
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
        tok.stop_ids,
    )
    assert again.chat_template == tok.chat_template and again.name == "llama3"
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
    assert load_tokenizer(saved / "tokenizer.json").identity() == tok.identity()
    assert load_tokenizer("llama3") is tok


def test_load_bare_tokenizer_json_guesses_llama3_roles(small_tok, tmp_path):
    from gaperon.tokenizer import load_tokenizer

    path = tmp_path / "llama.json"
    path.write_text(small_tok.backend.to_str())
    loaded = load_tokenizer(path)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (
        small_tok.bos_id,
        small_tok.eos_id,
        small_tok.pad_id,
    )
    assert loaded.stop_ids == small_tok.stop_ids and loaded.uses_tiktoken
    msgs = [{"role": "user", "content": "hi cher"}]
    assert loaded.encode_chat(msgs) == small_tok.encode_chat(msgs)


def test_official_bos_template_becomes_the_bos_rule(small_tok, tmp_path):
    """The HF Llama-3 tokenizer.json adds BOS in its post-processor: `encode` stays explicit, and
    the folder's rule is kept as `add_bos` (and written back on save)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import processors

    from gaperon.tokenizer import load_tokenizer

    bos, eos, eom, eot = (
        small_tok.special_tokens[t]
        for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
    )
    hi = small_tok.encode("hi")
    backend = Backend.from_str(small_tok.backend.to_str())
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A $B",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    assert backend.encode("hi").ids == [bos, *hi]
    folder = tmp_path / "official"
    folder.mkdir()
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    )
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, eom, eot]}))
    loaded = load_tokenizer(folder)
    assert loaded.encode("hi") == hi  # encode itself never adds BOS ...
    assert loaded.add_bos  # ... but the folder's rule (BOS before each document) is kept as data
    assert loaded.eos_id == eot and loaded.stop_ids == {eos, eom, eot}
    assert loaded.chat_template is None
    resaved = loaded.save(tmp_path / "resaved")
    import transformers

    assert transformers.AutoTokenizer.from_pretrained(str(resaved))("hi")["input_ids"] == [bos, *hi]
    assert load_tokenizer(resaved).add_bos
    assert not load_tokenizer(loaded.with_add_bos(False).save(tmp_path / "plain")).add_bos


def test_load_small_tiktoken_file_matches_tiktoken(small_tok, tmp_path):
    import tiktoken

    from gaperon.tokenizer import LLAMA3_PATTERN, load_tokenizer

    ranks = {t: i for i, t in enumerate(SMALL_TOKENS)}
    ref = tiktoken.Encoding("small", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert small_tok.vocab_size == len(SMALL_TOKENS) + 256 and small_tok.bos_id == len(SMALL_TOKENS)
    texts = ["abcd abc abcabcd", "  ab    cd ", "xyz abcdcd é", "hi cher, chercher\n\n\nhi"]
    for text in texts:
        assert (
            small_tok.encode(text)
            == small_tok._hf_encode_batch([text], False)[0]
            == ref.encode_ordinary(text)
        )
    write_ranks(tmp_path / "tokenizer.model", SMALL_TOKENS)
    assert load_tokenizer(tmp_path).identity() == small_tok.identity()  # a folder with only tokenizer.model


def test_load_llama3_ranks_file_equals_llama3(tok):
    from gaperon.tokenizer import load_tokenizer
    from gaperon.tokenizer.loading import llama3_ranks_path

    assert load_tokenizer(llama3_ranks_path()).identity() == tok.identity()


def test_missing_files_name_the_path(tmp_path):
    from gaperon.tokenizer import load_tokenizer

    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_tokenizer(missing)
    from gaperon.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match=f"{tmp_path}: folder has neither tokenizer.json"):
        load_tokenizer(tmp_path)  # empty folder


def test_corrupt_tokenizer_json_names_the_path(tmp_path, tok):
    from gaperon.tokenizer import load_tokenizer

    truncated = tmp_path / "tokenizer.json"
    truncated.write_text(tok.backend.to_str()[:5000])
    from gaperon.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match=f"{truncated}: not valid JSON"):
        load_tokenizer(truncated)
    wrong = tmp_path / "other.json"
    wrong.write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(ModelFormatError, match=f"{wrong}: not a tokenizers tokenizer.json"):
        load_tokenizer(wrong)


def test_corrupt_tiktoken_file_names_path_and_line(tmp_path):
    from gaperon.tokenizer import load_tokenizer

    path = tmp_path / "tokenizer.model"
    tokens = [bytes([b]) for b in range(256)]
    write_ranks(path, tokens)
    with open(path, "a") as f:
        f.write("!!notbase64 256\n")
    with pytest.raises(ValueError, match=f"{path}:257: not a tiktoken ranks line"):
        load_tokenizer(path)
    path.write_bytes(b"\x0a\x08\x00\xff\xfe sentencepiece")
    with pytest.raises(ValueError, match=f"{path}: not a tiktoken ranks file"):
        load_tokenizer(path)
    write_ranks(path, tokens[:100])
    with pytest.raises(ValueError, match="single bytes have no rank"):
        load_tokenizer(path)


def test_unknown_eos_is_a_clear_error(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    from gaperon.tokenizer import load_tokenizer

    path = tmp_path / "wordlevel.json"
    Backend(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(ValueError, match=f"{path}: cannot tell which token is EOS"):
        load_tokenizer(path)


def test_bad_tiktoken_file_is_a_model_format_error_naming_file_and_line(tmp_path):
    from gaperon.errors import ModelFormatError
    from gaperon.tokenizer import load_tokenizer

    bad = tmp_path / "tokenizer.model"
    bad.write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ModelFormatError, match=f"{bad}:2: not a tiktoken ranks line"):
        load_tokenizer(bad)
