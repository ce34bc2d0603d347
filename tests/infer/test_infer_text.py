from gaperon.infer.text import IncrementalDetokenizer, StopStringFilter, TextAssembler


def test_multibyte_characters_are_never_split(tok):
    text = "héllo 日本語 🙂 ok"
    deltas = []
    detok = IncrementalDetokenizer(tok)
    for i in tok.encode(text):
        deltas.append(detok.push(i))
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert "🙂" in deltas  # the 4-byte emoji comes out whole, at once


def test_incomplete_character_at_the_end_is_flushed_as_replacement(tok):
    detok = IncrementalDetokenizer(tok)
    ids = tok.encode("a€")[:-1]  # drop the last byte of the euro sign
    out = "".join(detok.push(i) for i in ids)
    assert out == "a"
    assert detok.flush() == "\ufffd"


def test_stop_string_split_across_pushes_is_held_back_and_cut():
    f = StopStringFilter(["STOP"])
    assert f.push("hello S") == "hello "
    assert f.push("T") == ""
    assert f.push("OP and more") == ""
    assert f.stopped
    assert f.flush() == ""


def test_false_start_of_a_stop_string_is_released():
    f = StopStringFilter(["</end>", "xyz"])
    assert f.push("a </e") == "a "
    assert f.push("x") == "</e"  # "</ex" cannot become "</end>", but "x" may start "xyz"
    assert f.push("y") == ""
    assert f.flush() == "xy"
    assert not f.stopped


def test_earliest_stop_string_wins():
    f = StopStringFilter(["bb", "a"])
    assert f.push("xxbba") == "xx"


def test_assembler_cuts_text_at_stop_string(tok):
    asm = TextAssembler(tok, ["##"])
    deltas = [asm.push(i) for i in tok.encode("café # done ## ignored")]
    assert asm.stopped
    assert "".join(deltas) == "café # done " == asm.text


def test_streaming_with_the_real_llama3_tokenizer():
    from gaperon.tokenizer import llama3_tokenizer

    tok = llama3_tokenizer()
    text = "L'été dernier à Zürich — 東京 🚀 def f(x):\n    return x**2"
    ids = tok.encode(text)
    asm = TextAssembler(tok, ["STOP"])
    deltas = [asm.push(i) for i in ids] + [asm.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
