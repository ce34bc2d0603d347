"""`gaperon serve`: an OpenAI-compatible HTTP API over the engine (FastAPI + uvicorn).

Routes: POST /v1/chat/completions, POST /v1/completions (both streaming with server-sent events
or not; n choices; logprobs; echo with prompt logprobs as vLLM does, which is what lm-eval's
`local-completions` model needs), POST /tokenize and /detokenize, GET /tokenizer_info (lm-eval's
remote tokenizer), GET /v1/models, /health and /metrics (Prometheus text). All requests go to ONE
engine loop, which batches them continuously. A client that disconnects has its requests cancelled
and their slots freed.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import hmac
import json
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gaperon.errors import GaperonError
from gaperon.infer.engine import EngineLike, build_engine
from gaperon.infer.engine_loop import EngineLoop, Overloaded
from gaperon.infer.openai_api import (
    APIError,
    ChoiceResult,
    ParsedRequest,
    chat_prompt_ids,
    chunk,
    encode_completion_prompt,
    full_response,
    new_id,
    parse_request,
    usage_chunk,
)
from gaperon.infer.requests import StepOutput
from gaperon.infer.sampling import Sampling
from gaperon.tokenizer.protocol import TextTokenizer, prompt_bos

__all__ = ["background_server", "build_engine", "create_app", "serve"]

log = logging.getLogger(__name__)

_DISCONNECTED = object()
MAX_BODY_BYTES = 16 << 20  # far above any prompt that fits a 4096-token context


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format (no client library)."""

    BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.latency_counts = [0] * len(self.BUCKETS)
        self.latency_sum = 0.0
        self._lock = threading.Lock()

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route, status)] += 1

    def completion(self, seconds: float, prompt_tokens: int, generated: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += generated
            self.latency_counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def render(self, in_flight: int, running: int, steps: int) -> str:
        with self._lock:
            lines = [
                "# HELP gaperon_requests_total HTTP requests by route and status.",
                "# TYPE gaperon_requests_total counter",
                *(
                    f'gaperon_requests_total{{route="{r}",status="{s}"}} {n}'
                    for (r, s), n in sorted(self.requests.items())
                ),
                "# HELP gaperon_prompt_tokens_total Prompt tokens of finished completions.",
                "# TYPE gaperon_prompt_tokens_total counter",
                f"gaperon_prompt_tokens_total {self.prompt_tokens}",
                "# HELP gaperon_generation_tokens_total Generated tokens of finished completions.",
                "# TYPE gaperon_generation_tokens_total counter",
                f"gaperon_generation_tokens_total {self.generation_tokens}",
                "# HELP gaperon_requests_in_flight Engine requests running or waiting for a slot.",
                "# TYPE gaperon_requests_in_flight gauge",
                f"gaperon_requests_in_flight {in_flight}",
                "# HELP gaperon_requests_waiting Engine requests queued for a slot.",
                "# TYPE gaperon_requests_waiting gauge",
                f"gaperon_requests_waiting {max(0, in_flight - running)}",
                "# HELP gaperon_engine_steps_total Engine steps (one token per running request each).",
                "# TYPE gaperon_engine_steps_total counter",
                f"gaperon_engine_steps_total {steps}",
                "# HELP gaperon_request_latency_seconds Completion latency, request received to last token.",
                "# TYPE gaperon_request_latency_seconds histogram",
            ]
            total = 0
            for le, n in zip(self.BUCKETS, self.latency_counts):
                total += n
                label = "+Inf" if le == math.inf else f"{le:g}"
                lines.append(f'gaperon_request_latency_seconds_bucket{{le="{label}"}} {total}')
            lines.append(f"gaperon_request_latency_seconds_sum {self.latency_sum:.6f}")
            lines.append(f"gaperon_request_latency_seconds_count {total}")
        return "\n".join(lines) + "\n"


class _Service:
    """What the routes share: the engine loop (started by the app's lifespan), the tokenizer thread,
    the key, the metrics."""

    def __init__(
        self,
        engine: EngineLike,
        tok: TextTokenizer,
        model_name: str,
        api_key: str | None,
        max_pending: int,
        defaults: Sampling | None,
    ) -> None:
        self.engine, self.tok, self.model_name = engine, tok, model_name
        self.api_key, self.max_pending, self.defaults = api_key, max_pending, defaults
        self.metrics = Metrics()
        self.created = int(time.time())
        self.loop: EngineLoop | None = None
        # Chat templates and tokenisation are CPU work of milliseconds for long prompts: done on one
        # worker thread (tokenizers need not be thread-safe), never on the event loop that streams.
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def engine_loop(self) -> EngineLoop:
        assert self.loop is not None, "the app's lifespan starts the engine loop"
        return self.loop

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.api_key.encode()
        ):
            raise APIError(
                401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"
            )

    async def on_tokenizer(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def complete(self, request: Request, kind: str) -> Any:
        self.check_auth(request)
        start = time.monotonic()
        body = await read_json(request)
        engine_loop = self.engine_loop
        parsed = await self.on_tokenizer(
            lambda: parse_request(
                body,
                kind=kind,
                model_name=self.model_name,
                tok=self.tok,
                max_len=engine_loop.max_len,
                defaults=self.defaults,
            )
        )
        rid = new_id(kind)
        if engine_loop.num_active >= engine_loop.max_pending:  # fail before a stream starts (200 sent)
            raise _busy(engine_loop)
        if parsed.stream:
            events = _sse(request, engine_loop, kind, rid, self.model_name, parsed, self.metrics, start)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        choices = await _run_choices(request, engine_loop, parsed)
        response = full_response(kind, rid, self.model_name, choices, self.tok, parsed)
        u = response["usage"]
        self.metrics.completion(time.monotonic() - start, u["prompt_tokens"], u["completion_tokens"])
        return response


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large")
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large")
        chunks.append(part)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(
            400, f"We could not parse the JSON body of your request: {e}", code="invalid_json"
        ) from None


def create_app(
    engine: EngineLike,
    tok: TextTokenizer,
    *,
    model_name: str,
    api_key: str | None = None,
    max_pending: int = 1024,
    defaults: Sampling | None = None,
) -> FastAPI:
    """The web app; the engine loop starts with the app and stops with it. max_pending: most
    requests in flight (running + queued for a slot); more get HTTP 503 (the openai client retries).
    defaults: sampling for what a request leaves out (the model's generation config)."""
    svc = _Service(engine, tok, model_name, api_key, max_pending, defaults)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.loop = EngineLoop(engine, max_pending=max_pending)
        svc.loop.start()
        svc.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gaperon-tok")
        app.state.engine_loop = svc.loop
        try:
            yield
        finally:
            svc.loop.close()
            svc.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="gaperon", lifespan=lifespan)
    app.state.model_name = model_name
    app.state.metrics = svc.metrics
    _error_handlers(app, svc.metrics)
    _info_routes(app, svc)
    _token_routes(app, svc)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await svc.complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await svc.complete(request, "completion")

    return app


def _error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, e: APIError) -> JSONResponse:
        return error(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error(
            APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)
        )

    @app.exception_handler(Exception)
    async def _server_error(_request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")  # a bug: logged with its traceback, the client gets a 500
        return error(APIError(500, f"internal server error: {type(e).__name__}", type="server_error"))

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        metrics.request(request.url.path, response.status_code)
        return response


def _info_routes(app: FastAPI, svc: _Service) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        active = svc.loop.num_active if svc.loop else 0
        return {"status": "ok", "model": svc.model_name, "active": active}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        loop = svc.engine_loop
        running = min(getattr(svc.engine, "num_running", svc.engine.num_active), loop.num_active)
        text = svc.metrics.render(loop.num_active, running, loop.steps)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        svc.check_auth(request)
        card = {
            "id": svc.model_name,
            "object": "model",
            "created": svc.created,
            "owned_by": "gaperon",
            "max_model_len": svc.engine.max_len,
        }
        return {"object": "list", "data": [card]}


def _token_routes(app: FastAPI, svc: _Service) -> None:
    tok = svc.tok

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        svc.check_auth(request)
        body = await read_json(request)
        ids = await svc.on_tokenizer(lambda: _tokenize(body, tok))
        return {"count": len(ids), "max_model_len": svc.engine.max_len, "tokens": ids}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        """What lm-eval's remote tokenizer asks first: the special tokens' text and the context."""

        def text(i: int | None) -> str | None:
            return None if i is None else tok.decode([i], skip_special=False)

        return {
            "eos_token": text(tok.eos_id),
            "bos_token": text(tok.bos_id),
            "pad_token": text(getattr(tok, "pad_id", None)),
            "model_max_length": svc.engine.max_len,
            "add_bos_token": prompt_bos(tok),
            "tokenizer_class": type(tok).__name__,
        }

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        svc.check_auth(request)
        body = await read_json(request)
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            raise APIError(400, "'tokens' must be a list of token ids", param="tokens", code="invalid_type")
        bad = [t for t in tokens if not 0 <= t < tok.vocab_size]
        if bad:
            raise APIError(
                400, f"token id {bad[0]} is outside the vocabulary", param="tokens", code="invalid_value"
            )
        return {"prompt": await svc.on_tokenizer(lambda: tok.decode(tokens, skip_special=False))}


def _tokenize(body: Any, tok: TextTokenizer) -> list[int]:
    """vLLM's /tokenize: a `prompt` (special-token text understood, BOS by the tokenizer's rule unless
    add_special_tokens is false) or chat `messages` rendered by the template."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if "messages" in body:
        return chat_prompt_ids(body, tok)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string", param="prompt", code="invalid_type")
    if body.get("add_special_tokens", True) is False:
        return tok.encode(prompt, allow_special=True)
    return encode_completion_prompt(tok, prompt)


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

    def __init__(
        self, engine_loop: EngineLoop, prompt: list[int], sampling: Sampling, echo_logprobs: int | None
    ) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        aloop = asyncio.get_running_loop()
        try:
            self.rid = engine_loop.submit(
                prompt,
                sampling,
                lambda item: aloop.call_soon_threadsafe(self.queue.put_nowait, item),
                echo_logprobs,
            )
        except Overloaded:
            raise _busy(engine_loop) from None
        self.finished = False


def _failure(item: Exception) -> APIError:
    """An engine-side failure of one request: the request's fault (400) or ours (500)."""
    if isinstance(item, GaperonError):
        return APIError(400, str(item))
    return APIError(500, str(item), type="server_error")


async def _wait_disconnect(request: Request, queues: list[asyncio.Queue[Any]]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            for q in queues:
                q.put_nowait(_DISCONNECTED)
            return


async def _watch(request: Request, engine_loop: EngineLoop, outputs: _Outputs) -> AsyncIterator[StepOutput]:
    """Engine outputs of one request until it finishes; cancels it if the client goes away."""
    watcher = asyncio.create_task(_wait_disconnect(request, [outputs.queue]))
    try:
        async for item in _drain(outputs):
            yield item
    finally:
        watcher.cancel()
        if not outputs.finished:
            engine_loop.cancel(outputs.rid)


async def _drain(outputs: _Outputs) -> AsyncIterator[StepOutput]:
    while True:
        item = await outputs.queue.get()
        if item is _DISCONNECTED:
            return
        if isinstance(item, Exception):
            outputs.finished = True
            raise _failure(item)
        yield item
        if item.finished:
            outputs.finished = True
            return


async def _choice(outputs: _Outputs, prompt: list[int]) -> ChoiceResult:
    c = ChoiceResult("", [], "stop", [], prompt)
    async for out in _drain(outputs):
        c.text += out.text
        c.token_ids += out.token_ids
        c.logprobs += out.logprobs
        if out.prompt_logprobs is not None:
            c.prompt_logprobs = out.prompt_logprobs
        if out.finished:
            c.finish_reason = out.finish_reason or "stop"
    return c


async def _run_choices(
    request: Request, engine_loop: EngineLoop, parsed: ParsedRequest
) -> list[ChoiceResult]:
    """All choices of a request (n per prompt) run together in the engine; one disconnect cancels all.
    Choice j of a seeded request uses seed + j, so the n choices differ yet are reproducible."""
    outs: list[_Outputs] = []
    pairs: list[tuple[_Outputs, list[int]]] = []
    try:
        for prompt in parsed.prompts:
            for j in range(parsed.n):
                seed = parsed.sampling.seed
                sampling = (
                    parsed.sampling if j == 0 or seed is None else parsed.sampling.replace(seed=seed + j)
                )
                o = _Outputs(engine_loop, prompt, sampling, parsed.echo_logprobs)
                outs.append(o)
                pairs.append((o, prompt))
        watcher = asyncio.create_task(_wait_disconnect(request, [o.queue for o in outs]))
        try:
            return list(await asyncio.gather(*(_choice(o, p) for o, p in pairs)))
        finally:
            watcher.cancel()
    finally:
        for o in outs:
            if not o.finished:
                engine_loop.cancel(o.rid)


async def _sse(
    request: Request,
    engine_loop: EngineLoop,
    kind: str,
    rid: str,
    model_name: str,
    parsed: ParsedRequest,
    metrics: Metrics,
    start: float,
) -> AsyncIterator[str]:
    def event(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    # Submitted only once the response streams: a client gone before that never occupies a slot.
    try:
        outputs = _Outputs(engine_loop, parsed.prompt_ids, parsed.sampling, None)
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
    metrics.completion(time.monotonic() - start, len(parsed.prompt_ids), n_out)
    if parsed.include_usage:
        yield event(usage_chunk(kind, rid, model_name, len(parsed.prompt_ids), n_out))
    yield "data: [DONE]\n\n"


# ---- running it ------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def serve(app: FastAPI, sock: socket.socket, log_level: str = "info") -> None:
    """Run on an already bound socket until interrupted (the `gaperon serve` path)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    server.run(sockets=[sock])


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
