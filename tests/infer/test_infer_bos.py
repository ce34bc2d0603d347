"""The BOS rule for plain-text prompts (generate, /v1/completions, /tokenize): one recorded fact decides."""

from infer_helpers import ByteTokenizer

from gaperon.infer.commands import encode_prompt
from gaperon.infer.openai_api import encode_completion_prompt
from gaperon.tokenizer import llama3_tokenizer
from gaperon.tokenizer.protocol import prompt_bos


class _Declared(ByteTokenizer):
    def __init__(self, add_bos: bool, template: str) -> None:
        super().__init__()
        self.add_bos = add_bos
        self.chat_template = template


def test_llama3_prompts_start_as_our_pretraining_documents_do():
    tok = llama3_tokenizer()
    assert not prompt_bos(tok)  # our packed documents are text + EOS, with no BOS
    ids = encode_completion_prompt(tok, "Bonjour")
    assert ids == tok.encode("Bonjour") == encode_prompt(tok, "Bonjour", chat=False)


def test_a_declared_bos_rule_is_followed_and_never_doubles():
    tok = llama3_tokenizer().with_add_bos(True)
    assert prompt_bos(tok)
    ids = encode_completion_prompt(tok, "Bonjour")
    assert ids == [tok.bos_id, *tok.encode("Bonjour")] == encode_prompt(tok, "Bonjour", chat=False)
    # A prompt that already spells BOS is not given a second one (special text is understood).
    assert encode_completion_prompt(tok, "<|begin_of_text|>Bonjour") == ids


def test_the_rule_is_data_not_a_guess_from_the_template():
    plain = ByteTokenizer()  # records no rule: no BOS
    assert not prompt_bos(plain) and encode_completion_prompt(plain, "hi") == plain.encode("hi")
    assert not prompt_bos(_Declared(False, "{{ bos_token }}{{ messages }}"))  # trained without BOS
    declared = _Declared(True, "chatml")
    assert prompt_bos(declared) and encode_completion_prompt(declared, "hi")[0] == declared.bos_id


def test_chat_prompts_leave_bos_to_the_template():
    for tok in (llama3_tokenizer(), llama3_tokenizer().with_add_bos(True)):
        ids = encode_prompt(tok, "Bonjour", chat=True)
        assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id
