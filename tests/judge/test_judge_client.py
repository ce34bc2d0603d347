"""The judge client against a scripted local endpoint: retries, failures per reason, cache, resume."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter

import pytest

from gaperon.errors import EndpointError, UsageError
from gaperon.judge import Job, JudgeClient, ParseError
from gaperon.judge.client import chat_url
from gaperon.judge.fake import Reply, fake_endpoint


def parse_int(text: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ParseError(f"not a number: {text!r}")
    return int(text)


def jobs(n: int, prefix: str = "q") -> list[Job]:
    return [
        Job(f"{prefix}{i}", [{"role": "user", "content": f"{prefix}{i}"}], {"temperature": 0})
        for i in range(n)
    ]


def scripted(script: dict[str, list[Reply | str]], default=lambda c: str(len(c))):
    """Per prompt, a list of replies consumed in order; then the default (its length as a number)."""
    lock, seen = threading.Lock(), Counter()

    def respond(body: dict):
        content = body["messages"][-1]["content"]
        with lock:
            i = seen[content]
            seen[content] += 1
        replies = script.get(content, [])
        return replies[i] if i < len(replies) else default(content)

    return respond


def client(url, tmp_path=None, **kw) -> JudgeClient:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("timeout_s", 5.0)
    return JudgeClient(url, "judge-model", cache=tmp_path / "cache.jsonl" if tmp_path else None, **kw)


def test_concurrent_answers_are_all_parsed():
    with fake_endpoint(scripted({})) as srv, client(srv.url, concurrency=4) as c:
        got = {}
        report = c.run(jobs(25), parse_int, on_outcome=lambda o: got.__setitem__(o.job.key, o.value))
    assert report.done == 25 and report.n_failed == 0
    assert got == {f"q{i}": len(f"q{i}") for i in range(25)}
    assert {r["model"] for r in srv.requests} == {"judge-model"}
    assert all(r["temperature"] == 0 for r in srv.requests)


def test_5xx_and_bad_json_are_retried_then_succeed():
    script = {"q0": [Reply(status=503), Reply(status=500)], "q1": [Reply(raw=b"{not json"), Reply(raw=b"[]")]}
    with fake_endpoint(scripted(script)) as srv, client(srv.url, max_retries=3) as c:
        outs = []
        report = c.run(jobs(2), parse_int, on_outcome=outs.append)
    assert report.done == 2 and report.failed == {}
    assert {o.job.key: o.attempts for o in outs} == {"q0": 3, "q1": 3}
    assert len(srv.requests) == 6


def test_exhausted_retries_and_4xx_are_counted_not_dropped():
    script = {
        "q0": [Reply(status=502)] * 10,  # 5xx forever: 1 + max_retries attempts
        "q1": [Reply(status=400, body='{"error": {"message": "bad"}}')] * 10,  # not retried
        "q2": [Reply(raw=b"<html>proxy error</html>")] * 10,
        "q3": ["I think the answer is seven"],  # garbage content: parser refuses
    }
    with fake_endpoint(scripted(script)) as srv, client(srv.url, max_retries=2) as c:
        report = c.run(jobs(5), parse_int)
    assert report.done == 1  # q4 only
    assert report.failed == {"http_5xx": 1, "http_400": 1, "bad_response": 1, "unparseable": 1}
    assert "q3" in report.first_error["unparseable"] and "seven" in report.first_error["unparseable"]
    per_prompt = Counter(r["messages"][-1]["content"] for r in srv.requests)
    assert per_prompt["q0"] == 3 and per_prompt["q1"] == 1 and per_prompt["q2"] == 3 and per_prompt["q3"] == 1


def test_timeouts_are_retried_and_counted():
    script = {"q0": [Reply(text="1", delay_s=5)] * 5, "q1": [Reply(text="7", delay_s=5), "7"]}
    with fake_endpoint(scripted(script)) as srv, client(srv.url, timeout_s=0.3, max_retries=1) as c:
        outs = {}
        report = c.run(jobs(2), parse_int, on_outcome=lambda o: outs.__setitem__(o.job.key, o))
    assert report.failed == {"timeout": 1} and report.done == 1
    assert outs["q1"].value == 7 and outs["q1"].attempts == 2
    assert "2 attempts" in outs["q0"].detail


def test_connection_refused_is_a_connection_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(f"http://127.0.0.1:{port}", max_retries=1) as c:
        report = c.run(jobs(2), parse_int)
        assert report.failed == {"connection": 2}
        with pytest.raises(EndpointError, match="connection"):
            c.chat([{"role": "user", "content": "hi"}])


def test_cache_makes_a_rerun_free_and_survives_a_torn_line(tmp_path):
    script = {"q3": ["garbage"]}
    with fake_endpoint(scripted(script)) as srv:
        with client(srv.url, tmp_path) as c:
            r1 = c.run(jobs(6), parse_int)
        assert r1.done == 5 and r1.failed == {"unparseable": 1}
        n_first = len(srv.requests)
        # A kill in the middle of a write leaves a torn last line: it is ignored, nothing else lost.
        with open(tmp_path / "cache.jsonl", "a") as f:
            f.write('{"key": "abc", "content": "12')
        with client(srv.url, tmp_path) as c:
            assert c.cache.torn_lines == 1 and len(c.cache) == 6
            r2 = c.run(jobs(8), parse_int)  # 6 cached (garbage one included), 2 new
        assert len(srv.requests) == n_first + 2
        assert r2.cached == 5 and r2.done == 7 and r2.failed == {"unparseable": 1}
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('{"key"') and line.endswith("}")) == 8
    assert json.loads(lines[-1])["model"] == "judge-model"


def test_cache_key_depends_on_model_messages_and_params():
    c = JudgeClient("http://127.0.0.1:1", "m")
    m = [{"role": "user", "content": "x"}]
    k = c.cache_key(m, {"temperature": 0})
    assert k == c.cache_key([dict(m[0])], {"temperature": 0})
    assert k != c.cache_key(m, {"temperature": 1})
    assert k != c.cache_key([{"role": "user", "content": "y"}], {"temperature": 0})
    assert k != JudgeClient("http://127.0.0.1:1", "other").cache_key(m, {"temperature": 0})


def test_endpoint_forms_and_bad_arguments():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    with pytest.raises(UsageError, match="http"):
        chat_url("localhost:8000")
    with pytest.raises(UsageError, match="concurrency"):
        JudgeClient("http://h", "m", concurrency=0)


def test_api_key_is_sent_as_bearer():
    seen = []

    def respond(body):
        return "1"

    with fake_endpoint(respond) as srv:
        orig = srv.httpd.RequestHandlerClass.do_POST

        def spy(self):
            seen.append(self.headers.get("Authorization"))
            orig(self)

        srv.httpd.RequestHandlerClass.do_POST = spy
        with JudgeClient(srv.url, "m", api_key="sekret") as c:
            assert c.chat([{"role": "user", "content": "x"}]) == "1"
    assert seen == ["Bearer sekret"]
