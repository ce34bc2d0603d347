"""Chat sessions on the engine (checked against the reference generator) and the terminal loop."""

import io

from infer_helpers import ScriptedModel

from gaperon.infer.chat import TRUNCATED, ChatSession, run_interactive
from gaperon.infer.engine import Engine
from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling


def _session(micro, tok, n=8, **kw):
    return ChatSession(Engine(micro, tok, max_batch=1), tok, sampling=Sampling(max_new_tokens=n), **kw)


def test_multi_turn_history_uses_the_chat_template(micro, tok):
    s = _session(micro, tok, system="be brief")
    first = "".join(s.reply("hello"))
    second = "".join(s.reply("again"))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages[2]["content"] == first and s.messages[4]["content"] == second
    # Each reply is exactly what the reference generator gives on the rendered history.
    for n_before, reply in ((2, first), (4, second)):
        expected = generate(micro, tok, tok.encode_chat(s.messages[:n_before]), Sampling(max_new_tokens=8))
        assert reply == expected.text and reply


def test_reset_and_system(micro, tok):
    s = _session(micro, tok)
    "".join(s.reply("hi"))
    s.reset()
    assert s.messages == []
    s.set_system("pirate")
    assert s.messages == [{"role": "system", "content": "pirate"}]


def test_history_that_outgrows_the_context_drops_old_turns_and_says_so(tok):
    model = ScriptedModel([10] * 100, prompt_len=10**6, max_seq_len=120)  # replies 'stop' at once
    s = ChatSession(Engine(model, tok, max_batch=1), tok, sampling=Sampling(max_new_tokens=4))
    for i in range(6):
        "".join(s.reply(f"message number {i} " * 2))
    assert len(tok.encode_chat(s.messages[:-1])) < 120  # the prompt of the last reply fitted
    assert s.turns[-2]["content"].startswith("message number 5")
    assert not s.turns[0]["content"].startswith("message number 0")
    out = io.StringIO()
    run_interactive(s, io.StringIO("message number 6 message number 6\n"), out)
    assert "oldest messages were dropped to fit the context" in out.getvalue()


def test_interactive_loop_from_stdin(micro, tok):
    s = _session(micro, tok)
    stdin = io.StringIO("hello\n\n/system you are terse\nhi\n/bogus\n/reset\n/help\nbye\n/exit\nnever read\n")
    out = io.StringIO()
    assert run_interactive(s, stdin, out) == 0
    text = out.getvalue()
    assert "system prompt set" in text and "conversation reset" in text and "unknown command '/bogus'" in text
    assert "/reset (forget the conversation)" in text  # /help
    assert s.system == "you are terse"
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]  # only "bye" after /reset
    assert s.turns[0]["content"] == "bye"


def test_reply_cut_at_the_token_limit_is_marked(tok):
    never_stops = ScriptedModel([ord("a") + 5] * 50, prompt_len=0, max_seq_len=400)
    s = ChatSession(Engine(never_stops, tok, max_batch=1), tok, sampling=Sampling(max_new_tokens=3))
    out = io.StringIO()
    run_interactive(s, io.StringIO("go\n"), out)
    assert TRUNCATED in out.getvalue() and s.last_finish == "length"
    stops = ScriptedModel([2], prompt_len=0, max_seq_len=400)  # token 2 = end of text at once
    s = ChatSession(Engine(stops, tok, max_batch=1), tok, sampling=Sampling(max_new_tokens=3))
    out = io.StringIO()
    run_interactive(s, io.StringIO("go\n"), out)
    assert TRUNCATED not in out.getvalue() and s.last_finish == "stop"


def test_interactive_loop_ends_at_end_of_input(micro, tok):
    assert run_interactive(_session(micro, tok), io.StringIO("hi\n"), io.StringIO()) == 0


def test_a_turn_longer_than_the_context_is_reported_and_the_session_goes_on(tok):
    model = ScriptedModel([2], prompt_len=0, max_seq_len=64)
    s = ChatSession(Engine(model, tok, max_batch=1), tok, sampling=Sampling(max_new_tokens=4))
    out = io.StringIO()
    assert run_interactive(s, io.StringIO("x" * 200 + "\nhi\n"), out) == 0
    assert "(error: the prompt has" in out.getvalue()
    assert [m["content"] for m in s.turns] == ["hi", ""]  # the refused turn left no trace
