"""train_bpe: a small BPE of the Llama-3 design trains quickly, round-trips and carries the specials."""

from __future__ import annotations

import pytest

CORPUS = [
    "Le chat est sur le tapis. Les chats aiment dormir au soleil, n'est-ce pas ?",
    "The cat sat on the mat. Cats like sleeping in the sun, don't they?",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "La République française est un État unitaire ; sa capitale est Paris.",
    "It's 2024 and we've got 12345 tokens to learn from, haven't we?",
] * 40


@pytest.fixture(scope="module")
def small():
    from gaperon.tokenizer import train_bpe

    return train_bpe(CORPUS, 600)


def test_specials_after_learned_vocab(small):
    from gaperon.tokenizer import LLAMA3_SPECIALS

    learned = small.vocab_size - 256
    assert 256 < learned <= 600 - 256
    assert small.bos_id == learned and small.eos_id == learned + 1
    assert [small.special_tokens[s] for s in LLAMA3_SPECIALS] == list(range(learned, learned + 256))
    assert small.stop_ids == {learned + 1, learned + 8, learned + 9}
    assert small.pad_id == learned + 4


def test_learns_merges_and_round_trips(small):
    assert not small.uses_tiktoken  # trained merges are not a tiktoken rank table
    text = "Le chat et the cat: def add(a, b) -> 2024 ; « été » 🙂 <|eot_id|>"
    ids = small.encode(text)
    assert small.decode(ids) == text
    assert len(small.encode("Le chat est sur le tapis.")) < len(b"Le chat est sur le tapis.") / 2
    assert small.special_tokens["<|eot_id|>"] not in ids
    assert small.encode("<|eot_id|>", allow_special=True) == [small.special_tokens["<|eot_id|>"]]


def test_chat_works_on_trained(small):
    ids = small.encode_chat([{"role": "user", "content": "Bonjour"}])
    assert ids[0] == small.bos_id
    assert small.decode(ids).startswith("<|begin_of_text|><|start_header_id|>user")


def test_special_count_and_validation():
    from gaperon.tokenizer import train_bpe

    tok = train_bpe(CORPUS, 400, special_tokens=2)
    assert len(tok.special_tokens) == 2 and tok.chat_template is None and tok.pad_id is None
    assert tok.stop_ids == {tok.eos_id}
    with pytest.raises(ValueError, match="need >= 256"):
        train_bpe(CORPUS, 300)
    with pytest.raises(ValueError, match="must include"):
        train_bpe(CORPUS, 600, special_tokens=["<|begin_of_text|>"])


def test_trained_saves_for_transformers(small, tmp_path):
    import transformers

    from gaperon.tokenizer import load_tokenizer

    small.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "Les chats dorment. The cats sleep."
    assert hf(text)["input_ids"] == small.encode(text)
    assert load_tokenizer(tmp_path).identity() == small.identity()
