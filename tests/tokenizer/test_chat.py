"""The Llama-3 chat format: Python function == Jinja template == transformers on a saved folder."""

from __future__ import annotations

import pytest

CONVERSATIONS = [
    [{"role": "user", "content": "Quelle est la capitale de la France ?"}],
    [
        {"role": "system", "content": "Tu es un assistant utile.\nRéponds en français."},
        {"role": "user", "content": "Écris une fonction:\n\n```python\ndef f(x):\n    return x\n```"},
        {"role": "assistant", "content": "Voilà 🙂 :\n\n\tdef f(x): return x  \n"},
        {"role": "user", "content": "  Merci !  日本語 "},
    ],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "\n\n"}],
]


def test_llama3_chat_exact_text():
    from gaperon.tokenizer import llama3_chat

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi\nthere"}]
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi\nthere<|eot_id|>"
    )
    assert llama3_chat(msgs, add_generation_prompt=False) == expected
    assert llama3_chat(msgs) == expected + "<|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.mark.parametrize("gen", [True, False])
def test_template_matches_function_and_meta_ids(tok, meta, gen):
    from llama_models.llama3.chat_format import ChatFormat

    from gaperon.tokenizer import llama3_chat

    for msgs in CONVERSATIONS:
        assert tok.apply_chat_template(msgs, add_generation_prompt=gen) == llama3_chat(msgs, gen)
    # Meta's reference ChatFormat (always adds the assistant header) gives the same ids. It encodes
    # header and content separately, so content starting with a newline (CONVERSATIONS[2]) tokenizes
    # differently there; transformers, like us, encodes the rendered string.
    from llama_models.datatypes import RawMessage

    fmt = ChatFormat(meta)
    for msgs in CONVERSATIONS[:2]:
        raw = [RawMessage(role=m["role"], content=m["content"]) for m in msgs]
        assert tok.encode_chat(msgs) == fmt.encode_dialog_prompt(raw).tokens


def test_chat_ids_structure(tok):
    ids = tok.encode_chat([{"role": "user", "content": "hi <|eot_id|>"}], add_generation_prompt=False)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids[-1] == 128009


def test_bad_messages(tok):
    from gaperon.tokenizer import llama3_chat

    with pytest.raises(TypeError, match=r"messages\[0\]\['content'\]"):
        llama3_chat([{"role": "user", "content": None}])
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        tok.apply_chat_template([{"role": "user", "content": "a"}, "oops"])
    with pytest.raises(TypeError, match="list"):
        tok.encode_chat("just a string")


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    import transformers

    folder = tok.save(tmp_path_factory.mktemp("llama3_tok"))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _ids(out):
    return out if isinstance(out, list) else list(out["input_ids"])


@pytest.mark.parametrize("gen", [True, False])
def test_transformers_chat_parity(tok, hf_tok, gen):
    for msgs in CONVERSATIONS:
        text = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        assert text == tok.apply_chat_template(msgs, add_generation_prompt=gen)
        ours = tok.encode_chat(msgs, add_generation_prompt=gen)
        assert _ids(hf_tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)) == ours
        # The common pattern tok(apply_chat_template(tokenize=False)) must not add a second BOS.
        assert hf_tok(text)["input_ids"] == ours
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ours
        assert hf_tok.decode(ours) == text
