"""A scripted OpenAI-compatible chat endpoint on a loopback port, for offline dry runs and tests.

A `responder(body) -> Reply` decides, per request, what the "model" does: answer some text, answer
with an HTTP error, hang past the client's timeout, or send a body that is not JSON. That is how
the judge pipelines are exercised against every failure a real endpoint shows, without a model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """`text` as the assistant message, or `status` with `body`, after `delay_s`; `raw` replaces
    the whole response body (malformed JSON)."""

    text: str | None = None
    status: int = 200
    body: str | None = None
    raw: bytes | None = None
    delay_s: float = 0.0


Responder = Callable[[dict], "Reply | str"]


def completion(text: str, model: str = "fake") -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


@contextmanager
def fake_endpoint(responder: Responder) -> Iterator[FakeServer]:
    """Serve `responder` on 127.0.0.1:<free port> in a thread; yields the server (`.url`, `.requests`)."""
    server = FakeServer(responder)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.httpd.shutdown()
        server.httpd.server_close()


class FakeServer:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with server.lock:
                server.requests.append(body)
            reply = server.responder(body)
            if isinstance(reply, str):
                reply = Reply(text=reply)
            if reply.delay_s and server.stop.wait(reply.delay_s):
                return
            if reply.raw is not None:
                payload = reply.raw
            elif reply.status != 200:
                payload = (reply.body or json.dumps({"error": {"message": "scripted error"}})).encode()
            else:
                payload = json.dumps(completion(reply.text or "", body.get("model", "fake"))).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

    return Handler
