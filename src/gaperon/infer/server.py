"""`gaperon serve`: an OpenAI-compatible HTTP API over the engine (FastAPI + uvicorn).

Routes: POST /v1/chat/completions, POST /v1/completions (both streaming with server-sent events
or not), GET /v1/models, GET /health. All requests go to ONE engine loop, which batches them
continuously. A client that disconnects has its request cancelled and its slot freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gaperon.infer.engine_loop import EngineLoop, Overloaded
from gaperon.infer.openai_api import (
    APIError,
    chunk,
    full_response,
    new_id,
    parse_request,
    usage_chunk,
)

log = logging.getLogger(__name__)

_DISCONNECTED = object()
MAX_BODY_BYTES = 16 << 20  # far above any prompt that fits a 4096-token context


def build_engine(model, tok, *, max_batch: int = 8, max_len: int | None = None, draft=None, draft_k: int = 4):
    """The plain batched engine, or the speculative one when a draft model is given."""
    if draft is not None:
        from gaperon.infer.speculative import SpeculativeEngine

        return SpeculativeEngine(model, draft, tok, k=draft_k, max_len=max_len)
    from gaperon.infer.engine import Engine

    return Engine(model, tok, max_batch=max_batch, max_len=max_len)


def create_app(
    engine, tok, *, model_name: str, api_key: str | None = None, max_pending: int = 1024
) -> FastAPI:
    """The web app; the engine loop starts with the app and stops with it. max_pending: most
    requests in flight (running + queued for a slot); more get HTTP 503 (the openai client retries)."""
    loop_holder: dict[str, EngineLoop] = {}
    # Chat templates and tokenisation are CPU work of milliseconds for long prompts: done on one
    # worker thread (tokenizers need not be thread-safe), never on the event loop that streams.
    tokenizer_pool: dict[str, concurrent.futures.ThreadPoolExecutor] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine_loop = EngineLoop(engine, max_pending=max_pending)
        engine_loop.start()
        loop_holder["loop"] = engine_loop
        tokenizer_pool["pool"] = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gaperon-tok")
        app.state.engine_loop = engine_loop
        try:
            yield
        finally:
            engine_loop.close()
            tokenizer_pool["pool"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="gaperon", lifespan=lifespan)
    app.state.model_name = model_name
    created = int(time.time())

    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(
            APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)
        )

    @app.exception_handler(Exception)
    async def _server_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(APIError(500, f"internal server error: {type(e).__name__}", type="server_error"))

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(
                401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"
            )

    @app.get("/health")
    async def health() -> dict:
        engine_loop = loop_holder.get("loop")
        return {"status": "ok", "model": model_name, "active": engine_loop.num_active if engine_loop else 0}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_auth(request)
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "gaperon"}],
        }

    async def read_json(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large")
        chunks, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > MAX_BODY_BYTES:
                raise APIError(
                    413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large"
                )
            chunks.append(part)
        raw = b"".join(chunks)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(
                400, f"We could not parse the JSON body of your request: {e}", code="invalid_json"
            ) from None

    async def complete(request: Request, kind: str):
        check_auth(request)
        body = await read_json(request)
        engine_loop = loop_holder["loop"]
        parsed = await asyncio.get_running_loop().run_in_executor(
            tokenizer_pool["pool"],
            lambda: parse_request(
                body, kind=kind, model_name=model_name, tok=tok, max_len=engine_loop.max_len
            ),
        )
        rid = new_id(kind)
        if engine_loop.num_active >= engine_loop.max_pending:  # fail before a stream starts (200 sent)
            raise _busy(engine_loop)
        if parsed.stream:
            events = _sse(request, engine_loop, kind, rid, model_name, parsed)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        texts, n_out, finish = [], 0, "stop"
        async for out in _watch(request, engine_loop, _Outputs(engine_loop, parsed)):
            texts.append(out.text)
            n_out += len(out.token_ids)
            if out.finished:
                finish = out.finish_reason
        return full_response(kind, rid, model_name, "".join(texts), finish, len(parsed.prompt_ids), n_out)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, "completion")

    return app


def _busy(engine_loop: EngineLoop) -> APIError:
    return APIError(
        503,
        f"The server is overloaded ({engine_loop.max_pending} requests in flight); retry later",
        type="server_error",
        code="server_overloaded",
    )


class _Outputs:
    """The asyncio side of one engine request: a queue the engine thread fills (at most one item
    per generated token, so bounded by max_tokens)."""

    def __init__(self, engine_loop: EngineLoop, parsed) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        aloop = asyncio.get_running_loop()
        try:
            self.rid = engine_loop.submit(
                parsed.prompt_ids,
                parsed.sampling,
                lambda item: aloop.call_soon_threadsafe(self.queue.put_nowait, item),
            )
        except Overloaded:
            raise _busy(engine_loop) from None
        self.finished = False


async def _wait_disconnect(request: Request, q: asyncio.Queue) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            q.put_nowait(_DISCONNECTED)
            return


async def _watch(request: Request, engine_loop: EngineLoop, outputs: _Outputs) -> AsyncIterator:
    """Engine outputs of one request until it finishes; cancels it if the client goes away."""
    watcher = asyncio.create_task(_wait_disconnect(request, outputs.queue))
    try:
        while True:
            item = await outputs.queue.get()
            if item is _DISCONNECTED:
                return
            if isinstance(item, Exception):
                outputs.finished = True
                status = 400 if isinstance(item, ValueError) else 500
                raise APIError(
                    status, str(item), type="invalid_request_error" if status == 400 else "server_error"
                )
            yield item
            if item.finished:
                outputs.finished = True
                return
    finally:
        watcher.cancel()
        if not outputs.finished:
            engine_loop.cancel(outputs.rid)


async def _sse(request, engine_loop, kind, rid, model_name, parsed) -> AsyncIterator[str]:
    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    # Submitted only once the response streams: a client gone before that never occupies a slot.
    try:
        outputs = _Outputs(engine_loop, parsed)
    except APIError as e:  # overloaded since the check in `complete` (a race): the status is already 200
        yield event(e.body())
        return
    n_out = 0
    if kind == "chat":
        yield event(chunk(kind, rid, model_name, "", None, first=True))
    try:
        async for out in _watch(request, engine_loop, outputs):
            n_out += len(out.token_ids)
            if out.text:
                yield event(chunk(kind, rid, model_name, out.text, None))
            if out.finished:
                yield event(chunk(kind, rid, model_name, None if kind == "chat" else "", out.finish_reason))
    except APIError as e:
        yield event(e.body())
        return
    if not outputs.finished:
        return  # the client left
    if parsed.include_usage:
        yield event(usage_chunk(kind, rid, model_name, len(parsed.prompt_ids), n_out))
    yield "data: [DONE]\n\n"


# ---- running it ------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run until interrupted (the `gaperon serve` path)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
) -> Iterator[str]:
    """Serve `app` from a thread (tests, benchmarks); yields the base URL, stops on exit."""
    import uvicorn

    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gaperon-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
