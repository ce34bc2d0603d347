import io
import json

import pytest
from infer_helpers import ScriptedModel

from gaperon.cli import main
from gaperon.infer import commands
from gaperon.infer.chat import ChatOptions, ChatSession, run_interactive
from gaperon.infer.generate import generate


def _session(micro, tok, **kw):
    return ChatSession(micro, tok, options=ChatOptions(max_new_tokens=8), **kw)


def test_multi_turn_history_uses_the_chat_template(micro, tok):
    s = _session(micro, tok, system="be brief")
    first = "".join(s.reply("hello"))
    second = "".join(s.reply("again"))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages[2]["content"] == first and s.messages[4]["content"] == second
    # The second reply is exactly what the simple generator gives on the rendered history.
    history = s.messages[:4]
    expected = generate(micro, tok, tok.encode_chat(history), max_new_tokens=8)
    assert second == expected.text


def test_reset_and_system(micro, tok):
    s = _session(micro, tok)
    "".join(s.reply("hi"))
    s.reset()
    assert s.messages == []
    s.set_system("pirate")
    assert s.messages == [{"role": "system", "content": "pirate"}]


def test_history_that_outgrows_the_context_drops_old_turns(tok):
    model = ScriptedModel([10] * 100, prompt_len=10**6, max_seq_len=120)  # replies 'stop' at once
    s = ChatSession(model, tok, options=ChatOptions(max_new_tokens=4))
    for i in range(6):
        "".join(s.reply(f"message number {i} " * 2))
    assert len(tok.encode_chat(s.messages[:-1])) < 120  # the prompt of the last reply fitted
    assert s.turns[-2]["content"].startswith("message number 5")
    assert not s.turns[0]["content"].startswith("message number 0")


def test_interactive_loop_from_stdin(micro, tok):
    s = _session(micro, tok)
    stdin = io.StringIO("hello\n\n/system you are terse\nhi\n/bogus\n/reset\nbye\n/exit\nnever read\n")
    out = io.StringIO()
    assert run_interactive(s, stdin, out) == 0
    text = out.getvalue()
    assert "system prompt set" in text and "conversation reset" in text and "unknown command '/bogus'" in text
    assert s.system == "you are terse"
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]  # only "bye" after /reset
    assert s.turns[0]["content"] == "bye"


def test_interactive_loop_ends_at_end_of_input(micro, tok):
    assert run_interactive(_session(micro, tok), io.StringIO("hi\n"), io.StringIO()) == 0


@pytest.fixture
def fake_load(monkeypatch, micro, tok):
    monkeypatch.setattr(commands, "load", lambda path, device=None, dtype=None: (micro, tok))


def test_cli_chat_messages_and_generate(fake_load, micro, tok, capsys):
    assert main(["chat", "m.gguf", "--message", "hello", "--message", "more", "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.split("\n")
    s = _session(micro, tok)
    s.options.max_new_tokens = 6
    assert lines[0] == "".join(s.reply("hello"))
    assert main(["generate", "m.gguf", "--prompt", "abc", "--max-new-tokens", "7"]) == 0
    assert capsys.readouterr().out == generate(micro, tok, tok.encode("abc"), max_new_tokens=7).text + "\n"


def test_cli_chat_messages_json_on_stdin(fake_load, micro, tok, capsys, monkeypatch):
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(msgs)))
    assert main(["chat", "m.gguf", "--messages", "-", "--max-new-tokens", "5"]) == 0
    expected = generate(micro, tok, tok.encode_chat(msgs), max_new_tokens=5).text
    assert capsys.readouterr().out == expected + "\n"


def test_cli_bad_input_is_one_clear_line(fake_load, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert main(["chat", "m.gguf", "--messages", "-"]) == 1
    assert "standard input: not valid JSON" in capsys.readouterr().err
    bad = tmp_path / "m.json"
    bad.write_text('[{"role": "user"}]')
    assert main(["chat", "m.gguf", "--messages", str(bad)]) == 1
    assert "message 0 must be an object" in capsys.readouterr().err
    assert main(["generate", "m.gguf", "--prompt", "x", "--top-p", "0"]) == 1
    assert "top_p" in capsys.readouterr().err


def test_cli_missing_model_file(capsys, tmp_path):
    assert main(["generate", str(tmp_path / "missing.gguf"), "--prompt", "x"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_generate_with_a_draft_reports_acceptance(fake_load, micro, tok, capsys):
    assert main(["generate", "m.gguf", "--prompt", "abc", "--max-new-tokens", "7", "--draft", "d.gguf"]) == 0
    captured = capsys.readouterr()
    assert captured.out == generate(micro, tok, tok.encode("abc"), max_new_tokens=7).text + "\n"
    assert "acceptance rate 1.000" in captured.err


def test_cli_help_lists_the_verbs(capsys):
    for verb in ("generate", "chat", "serve"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "MODEL" in capsys.readouterr().out


def test_cli_serve_builds_the_app(fake_load, monkeypatch):
    from fastapi.testclient import TestClient

    from gaperon.infer import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda app, host, port: seen.update(app=app, host=host, port=port))
    assert main(["serve", "some/model.gguf", "--port", "9999", "--api-key", "k", "--max-batch", "2"]) == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 9999)
    with TestClient(seen["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        r = client.get("/v1/models", headers={"Authorization": "Bearer k"})
        assert r.json()["data"][0]["id"] == "model"
        r = client.post(
            "/v1/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "model", "prompt": "hi", "max_tokens": 3, "temperature": 0},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_cli_serve_queue_bound(fake_load, monkeypatch, capsys):
    from gaperon.infer import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda app, host, port: seen.update(app=app))
    assert main(["serve", "m.gguf", "--max-queue", "0"]) == 1
    assert "--max-queue" in capsys.readouterr().err and not seen
    assert main(["serve", "m.gguf", "--max-queue", "3"]) == 0
    from fastapi.testclient import TestClient

    with TestClient(seen["app"]):
        assert seen["app"].state.engine_loop.max_pending == 3
