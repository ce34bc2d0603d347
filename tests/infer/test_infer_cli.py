"""`gaperon generate | chat | serve`: the engine behind each verb (checked against the reference
generator), one-line errors with the right exit codes, and every bad argument refused before loading."""

import io
import json
import socket

import pytest
import torch
from infer_helpers import ScriptedModel, ShiftedByteTokenizer, micro_model

from gaperon.cli import main
from gaperon.errors import EXIT_USAGE
from gaperon.infer import commands, server
from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling


@pytest.fixture
def fake_load(monkeypatch, micro, tok):
    calls = []

    def load(path, device=None, dtype=None):
        calls.append(path)
        return micro, tok

    monkeypatch.setattr(commands, "load", load)
    return calls


@pytest.fixture
def no_load(monkeypatch):
    """Any model load fails the test: what these arguments must be refused before."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(commands, "load", load)


def test_generate_and_chat_run_the_engine_and_match_the_reference(fake_load, micro, tok, capsys, monkeypatch):
    from gaperon.infer import engine as engine_mod

    built = []
    real = engine_mod.build_engine
    monkeypatch.setattr(engine_mod, "build_engine", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    assert main(["generate", "m.gguf", "--prompt", "abc", "--max-new-tokens", "7"]) == 0
    ref = generate(micro, tok, tok.encode("abc"), Sampling(max_new_tokens=7))
    assert ref.text and capsys.readouterr().out == ref.text + "\n"
    assert main(["chat", "m.gguf", "--message", "hello", "--max-new-tokens", "6"]) == 0
    ref = generate(
        micro, tok, tok.encode_chat([{"role": "user", "content": "hello"}]), Sampling(max_new_tokens=6)
    )
    assert capsys.readouterr().out == ref.text + "\n"
    assert [type(e).__name__ for e in built] == ["Engine", "Engine"]


def test_chat_messages_json_on_stdin(fake_load, micro, tok, capsys, monkeypatch):
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(msgs)))
    assert main(["chat", "m.gguf", "--messages", "-", "--max-new-tokens", "5"]) == 0
    expected = generate(micro, tok, tok.encode_chat(msgs), Sampling(max_new_tokens=5)).text
    assert expected and capsys.readouterr().out == expected + "\n"


def test_bad_messages_file_is_one_clear_line(fake_load, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert main(["chat", "m.gguf", "--messages", "-"]) == 1
    err = capsys.readouterr().err
    assert "standard input: not valid JSON" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "m.json"
    bad.write_text('[{"role": "user"}]')
    assert main(["chat", "m.gguf", "--messages", str(bad)]) == 1
    assert "message 0 must be an object" in capsys.readouterr().err
    assert not fake_load  # refused before loading


def test_missing_model_file(capsys, tmp_path):
    assert main(["generate", str(tmp_path / "missing.gguf"), "--prompt", "x"]) == 1
    assert "no such file" in capsys.readouterr().err.lower()


BAD_ARGS = [
    (["generate", "m.gguf", "--prompt", "x", "--temperature", "-1"], "temperature"),
    (["generate", "m.gguf", "--prompt", "x", "--top-p", "0"], "top_p"),
    (["generate", "m.gguf", "--prompt", "x", "--top-k", "-3"], "top_k"),
    (["generate", "m.gguf", "--prompt", "x", "--max-new-tokens", "-1"], "max_new_tokens"),
    (["generate", "m.gguf", "--prompt", "x", "--repetition-penalty", "0"], "repetition_penalty"),
    (["generate", "m.gguf", "--prompt", "x", "--presence-penalty", "3"], "presence_penalty"),
    (["generate", "m.gguf", "--prompt", "x", "--draft", "d.gguf", "--draft-k", "0"], "--draft-k"),
    (["chat", "m.gguf", "--device", "tpu"], "--device"),
    (["chat", "m.gguf", "--device", "cpu", "--dtype", "float8"], "--dtype"),
    (["serve", "m.gguf", "--port", "99999"], "--port"),
    (["serve", "m.gguf", "--max-len", "-5"], "--max-len"),
    (["serve", "m.gguf", "--max-queue", "0"], "--max-queue"),
    (["serve", "m.gguf", "--max-batch", "0"], "--max-batch"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_ARGS)
def test_bad_arguments_are_refused_before_loading(no_load, capsys, argv, needle):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_machine_is_refused_before_loading(no_load, capsys):
    assert main(["generate", "m.gguf", "--prompt", "x", "--device", "cuda"]) == EXIT_USAGE
    assert "no CUDA" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_loading_and_before_serving_on(no_load, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "m.gguf", "--port", str(port)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "already in use" in err and "serving" not in err


def test_serve_binds_then_loads_then_says_serving(fake_load, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    seen = {}

    def fake_serve(app, sock):
        # The socket is bound (and listening) before the model loads and before "serving on".
        seen.update(app=app, port=sock.getsockname()[1], loaded=list(fake_load))

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.setenv("GAPERON_API_KEY", "k-from-env")
    assert main(["serve", "some/model.gguf", "--port", "0", "--max-batch", "2", "--max-queue", "3"]) == 0
    assert seen["loaded"] == ["some/model.gguf"] and "serving model on" in capsys.readouterr().err
    with TestClient(seen["app"]) as client:
        assert seen["app"].state.engine_loop.max_pending == 3
        assert client.get("/v1/models").status_code == 401
        auth = {"Authorization": "Bearer k-from-env"}
        assert client.get("/v1/models", headers=auth).json()["data"][0]["id"] == "model"
        r = client.post(
            "/v1/completions",
            headers=auth,
            json={"model": "model", "prompt": "hi", "max_tokens": 3, "temperature": 0},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_api_key_file_wins_over_the_environment(tmp_path):
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert commands.read_api_key(None, str(key), {"GAPERON_API_KEY": "env"}) == "from-file"
    assert commands.read_api_key(None, None, {"GAPERON_API_KEY": "env"}) == "env"
    assert commands.read_api_key(None, None, {}) is None


def test_max_len_beyond_the_model_context_is_an_error_not_a_clamp(fake_load, monkeypatch, capsys):
    monkeypatch.setattr(server, "serve", lambda *_args: None)
    assert main(["serve", "m.gguf", "--port", "0", "--max-len", "100000"]) == EXIT_USAGE
    assert "longer than the model's context" in capsys.readouterr().err


def test_generation_defaults_come_from_the_model_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.3, "top_p": 0.8})
    )
    s = commands.resolve_sampling(folder, {"top_p": None, "seed": 4}, 128)
    assert (s.temperature, s.top_p, s.seed, s.max_new_tokens) == (0.3, 0.8, 4, 128)
    assert commands.resolve_sampling(folder, {"temperature": 0.0}, 9).temperature == 0.0
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6}))
    assert commands.resolve_sampling(folder, {}, 9).greedy
    assert commands.resolve_sampling(tmp_path / "model.gguf", {}, 9) == Sampling(max_new_tokens=9)


def test_a_draft_with_another_tokenizer_is_refused(monkeypatch, micro, tok, capsys):
    other = ShiftedByteTokenizer()
    assert other.vocab_size == tok.vocab_size  # same size, different ids
    monkeypatch.setattr(commands, "load", lambda path, *_args, **_kw: (micro, other if "d" in path else tok))
    assert main(["generate", "m.gguf", "--prompt", "x", "--draft", "d.gguf"]) == EXIT_USAGE
    assert "another tokenizer" in capsys.readouterr().err


def test_generate_with_a_draft_reports_acceptance(fake_load, micro, tok, capsys):
    assert main(["generate", "m.gguf", "--prompt", "abc", "--max-new-tokens", "7", "--draft", "m.gguf"]) == 0
    captured = capsys.readouterr()
    assert captured.out == generate(micro, tok, tok.encode("abc"), Sampling(max_new_tokens=7)).text + "\n"
    assert "acceptance rate 1.000" in captured.err


def test_penalties_from_the_cli_reach_the_sampler(monkeypatch, tok, capsys):
    parrot = ScriptedModel([ord("a") + tok.OFFSET] * 50, prompt_len=0, max_seq_len=400)  # logit 10 on 'a'
    monkeypatch.setattr(commands, "load", lambda *_args, **_kw: (parrot, tok))
    argv = ["generate", "m.gguf", "--prompt", "b", "--max-new-tokens", "8"]
    assert main(argv) == 0
    assert capsys.readouterr().out == "a" * 8 + "\n"
    # Frequency penalty 2: after five 'a' the logit is 10 - 5 * 2 = 0, no longer above the rest.
    assert main([*argv, "--frequency-penalty", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a" * 5) and not out.startswith("a" * 6)


def test_help_lists_the_verbs(capsys):
    for verb in ("generate", "chat", "serve"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "MODEL" in capsys.readouterr().out


def test_micro_model_fixture_is_deterministic():
    a, b = micro_model(0), micro_model(0)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_serve_with_a_draft_says_it_serves_one_request_at_a_time(fake_load, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda app, _sock: seen.update(app=app))
    assert main(["serve", "m.gguf", "--port", "0", "--draft", "m.gguf"]) == 0
    assert "one request at a time" in capsys.readouterr().err


def test_serve_defaults_come_from_the_model_folder(monkeypatch, micro, tok, tmp_path):
    from fastapi.testclient import TestClient

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    monkeypatch.setattr(commands, "load", lambda *_a, **_k: (micro, tok))
    seen = {}
    monkeypatch.setattr(server, "serve", lambda app, _sock: seen.update(app=app))
    assert main(["serve", str(folder), "--port", "0", "--model-name", "m"]) == 0
    greedy = generate(micro, tok, tok.encode("abc"), Sampling(max_new_tokens=8)).text
    with TestClient(seen["app"]) as client:
        texts = {
            client.post("/v1/completions", json={"model": "m", "prompt": "abc", "max_tokens": 8}).json()[
                "choices"
            ][0]["text"]
            for _ in range(3)
        }
    assert texts == {greedy}  # do_sample false: greedy although the request left temperature out


def test_bad_sampling_and_port_values_are_refused_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gaperon.cli import main\n"
        "codes = [main(['generate', 'm.gguf', '--prompt', 'x', '--temperature', '-1']),\n"
        "         main(['serve', 'm.gguf', '--port', '99999'])]\n"
        "assert codes == [2, 2], codes\n"
        "assert 'torch' not in sys.modules, 'torch was imported to refuse an argument'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
