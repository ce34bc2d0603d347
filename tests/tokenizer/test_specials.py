"""Vocabulary size, the SPEC's special ids, roles, and special-token text in ordinary documents."""

from __future__ import annotations

import json
import pickle

import pytest

SPEC_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|finetune_right_pad_id|>": 128004,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
}


def test_vocab_size_and_spec_ids(tok):
    assert tok.vocab_size == 128256
    assert len(tok.special_tokens) == 256
    assert sorted(tok.special_tokens.values()) == list(range(128000, 128256))
    for name, i in SPEC_IDS.items():
        assert tok.special_tokens[name] == i
        assert tok.token_to_id(name) == i and tok.id_to_token(i) == name
    assert tok.special_tokens["<|reserved_special_token_0|>"] == 128002
    assert tok.special_tokens["<|reserved_special_token_247|>"] == 128255


def test_special_ids_agree_with_meta(tok, meta):
    # llama-models 0.3.0 uses Llama-3.2 names: 128005 <|step_id|>, 128011 <|image|>, and numbers its
    # reserved tokens differently; we keep the Llama-3.1 HF names. The named roles share ids.
    ours = {i: n for n, i in tok.special_tokens.items()}
    for name, i in meta.special_tokens.items():
        if name.startswith("<|reserved_special_token_") or name in {"<|step_id|>", "<|image|>"}:
            assert ours[i].startswith("<|reserved_special_token_"), (i, ours[i])
        else:
            assert tok.special_tokens[name] == i, name
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (meta.bos_id, meta.eos_id, meta.pad_id)
    assert tok.stop_ids == frozenset(meta.stop_tokens) == {128001, 128008, 128009}


def test_special_text_is_plain_by_default(tok, reference):
    text = "a web page quoting <|eot_id|> and <|begin_of_text|> literally"
    ids = tok.encode(text)
    assert ids == reference.encode_ordinary(text) == tok._hf_encode_batch([text], False)[0]
    assert not set(ids) & set(tok.special_tokens.values())
    assert tok.encode_batch([text]) == [ids]
    assert tok.decode(ids) == text


def test_allow_special_matches_tiktoken(tok, reference):
    text = "<|begin_of_text|>hi<|eot_id|>\n<|start_header_id|>x<|end_header_id|>"
    ids = tok.encode(text, allow_special=True)
    assert ids == reference.encode(text, allowed_special="all")
    assert ids[0] == 128000 and 128009 in ids
    assert tok.encode_batch([text, "a"], allow_special=True) == [ids, [64]]
    assert tok._hf_encode_batch([text, "a"], True) == [ids, [64]]


def test_bos_eos_flags_and_decode(tok):
    ids = tok.encode("Salut", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "<|begin_of_text|>Salut<|end_of_text|>"
    assert tok.decode(ids, skip_special=True) == "Salut"
    assert tok.encode_batch(["a", "b"], eos=True) == [[64, 128001], [65, 128001]]


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([1, 128256])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok.encode_batch(["ok", None])


def test_cached_identity_and_pickle(tok):
    from gaperon.tokenizer import llama3_tokenizer

    assert llama3_tokenizer() is tok
    ident = tok.identity()
    assert len(ident) == 64 and int(ident, 16) >= 0
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.identity() == ident
    assert clone.encode("x <|eot_id|>") == tok.encode("x <|eot_id|>")
    assert clone.stop_ids == tok.stop_ids


def test_identity_depends_on_vocab_and_specials(small_tok):
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as Backend

    from gaperon.tokenizer import Tokenizer

    backend = Backend.from_str(small_tok.backend.to_str())
    same = Tokenizer.from_backend(backend, bos_token=None, eos_token="<|end_of_text|>", chat_template=None)
    assert same.identity() == small_tok.identity()  # roles and template are not part of it
    backend = Backend.from_str(small_tok.backend.to_str())
    backend.add_special_tokens([AddedToken("<|extra|>", special=True)])
    other = Tokenizer.from_backend(backend, bos_token=None, eos_token="<|end_of_text|>", chat_template=None)
    assert other.identity() != small_tok.identity()
    assert other.vocab_size == small_tok.vocab_size + 1 and other.bos_id is None
    with pytest.raises(ValueError, match="no BOS"):
        other.encode("a", bos=True)


def test_from_backend_rejects_unknown_roles(tok):
    from gaperon.tokenizer import Tokenizer

    with pytest.raises(ValueError, match="eos_token '<nope>'"):
        Tokenizer.from_backend(tok.backend, bos_token=None, eos_token="<nope>", chat_template=None)


def test_fast_path_only_for_equivalent_backends(small_tok):
    """tiktoken is used only when the backend is provably the same BPE (fast_path.ranks_if_equivalent)."""
    from tokenizers import Tokenizer as Backend

    from gaperon.tokenizer import Tokenizer
    from gaperon.tokenizer.fast_path import ranks_if_equivalent

    assert small_tok.uses_tiktoken
    data = json.loads(small_tok.backend.to_str())
    assert ranks_if_equivalent(Backend.from_str(json.dumps(data))) is not None
    data["model"]["merges"] = data["model"]["merges"][:-1]  # drop one merge: no longer tiktoken's BPE
    assert ranks_if_equivalent(Backend.from_str(json.dumps(data))) is None
    data = json.loads(small_tok.backend.to_str())
    data["model"]["merges"][0], data["model"]["merges"][1] = (
        data["model"]["merges"][1],
        data["model"]["merges"][0],
    )
    assert ranks_if_equivalent(Backend.from_str(json.dumps(data))) is None
    data = json.loads(small_tok.backend.to_str())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    other = Tokenizer.from_backend(
        Backend.from_str(json.dumps(data)), bos_token=None, eos_token="<|end_of_text|>", chat_template=None
    )
    assert not other.uses_tiktoken
    assert (
        other.encode("ab cd") == other._hf_encode_batch(["ab cd"], False)[0] == [256, 32, 259]
    )  # "ab", " ", "cd"


def test_bos_adding_post_processor_is_dropped(small_tok):
    from tokenizers import Tokenizer as Backend
    from tokenizers import processors

    from gaperon.tokenizer import Tokenizer

    backend = Backend.from_str(small_tok.backend.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", small_tok.bos_id)]
    )
    assert backend.encode("hi").ids[0] == small_tok.bos_id
    wrapped = Tokenizer.from_backend(
        backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", chat_template=None
    )
    assert wrapped.backend.post_processor is None
    assert wrapped.encode("hi") == wrapped._hf_encode_batch(["hi"], True)[0] == small_tok.encode("hi")
