"""An OpenAI-compatible chat-completions client for LLM judges (`gaperon serve`, vLLM, any proxy).

Judging thousands of documents or generations against a remote model fails in every way a network
can: timeouts, 5xx, dropped connections, bodies that are not JSON, answers that are not in the
asked format. This client retries what a retry can fix (timeouts, connection errors, 5xx, 429 and
unreadable bodies) with exponential backoff, never what it cannot (other 4xx: the request itself
is wrong), and hands every answer to a caller-given strict parser. Every job ends as exactly one
`Outcome` and every failure is counted per reason in the `RunReport`: nothing is dropped silently.

Answers are cached on disk in an append-only jsonl file (one fsynced line per answer, written the
moment it arrives), keyed by (model, messages, params): a killed run loses no finished answer and a
rerun asks only what is missing. A torn last line (kill mid-write) is ignored on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gaperon.errors import EndpointError, UsageError

# Failure reasons a retry may fix. Any other 4xx means the request is wrong: retrying cannot help.
RETRYABLE = frozenset({"timeout", "connection", "http_5xx", "http_429", "bad_response"})


class ParseError(ValueError):
    """Raised by a caller's parser when an answer is not in the asked format."""

    def __init__(self, message: str, reason: str = "unparseable") -> None:
        super().__init__(message)
        self.reason = reason


class _AttemptFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Job:
    """One chat request: `key` is the caller's id for it (document id, prompt id...)."""

    key: str
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)
    meta: Any = None


@dataclass
class Outcome:
    """What became of one job: `ok` with the parsed `value`, or a failure `reason`."""

    job: Job
    ok: bool
    value: Any = None
    raw: str | None = None
    reason: str | None = None
    detail: str = ""
    cached: bool = False
    attempts: int = 0


@dataclass
class RunReport:
    """Counts of one `JudgeClient.run`: answered (from the endpoint or the cache) and failed by reason."""

    done: int = 0
    cached: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, str] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        if o.ok:
            self.done += 1
            self.cached += int(o.cached)
            return
        reason = o.reason or "unknown"
        self.failed[reason] = self.failed.get(reason, 0) + 1
        self.first_error.setdefault(reason, f"{o.job.key}: {o.detail}"[:500])

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    def to_dict(self) -> dict:
        return {
            "done": self.done,
            "cached": self.cached,
            "failed": dict(self.failed),
            "first_error": dict(self.first_error),
        }


def chat_url(endpoint: str) -> str:
    """Accept `http://host:port`, `.../v1` or the full `.../v1/chat/completions`."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"endpoint {endpoint!r}: expected an http(s) URL such as http://localhost:8000/v1")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


class AnswerCache:
    """Append-only jsonl of answers; thread-safe; each line fsynced before `put` returns."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._mem: dict[str, str] = {}
        self._lock = threading.Lock()
        self.torn_lines = 0
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def _load(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._mem[rec["key"]] = rec["content"]
            except (ValueError, KeyError, TypeError):
                self.torn_lines += 1  # a line cut by a kill: that answer will simply be asked again
        if data and not data.endswith(b"\n"):
            with open(self.path, "ab") as f:  # never glue a new record onto a torn one
                f.write(b"\n")

    def get(self, key: str) -> str | None:
        return self._mem.get(key)

    def put(self, key: str, content: str, model: str) -> None:
        with self._lock:
            self._mem[key] = content
            if self.path is None:
                return
            line = json.dumps({"key": key, "model": model, "content": content}, ensure_ascii=False)
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def __len__(self) -> int:
        return len(self._mem)

    def close(self) -> None:
        if self.path is not None and not self._fh.closed:
            self._fh.close()


class JudgeClient:
    """Concurrent, retrying, caching chat-completions client. Use as a context manager."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        concurrency: int = 4,
        cache: str | Path | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise UsageError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise UsageError(f"timeout must be > 0 seconds, got {timeout_s}")
        self.url = chat_url(endpoint)
        self.model = model
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.cache = AnswerCache(cache)

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self.cache.close()

    def cache_key(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        blob = json.dumps({"model": self.model, "messages": messages, "params": params}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # -- one request -------------------------------------------------------------------------------

    def _attempt(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        body = {"model": self.model, "messages": messages, **params}
        try:
            r = self._http.post(self.url, json=body)
        except httpx.TimeoutException as e:
            raise _AttemptFailed("timeout", f"{type(e).__name__} after {self._http.timeout.read}s") from e
        except httpx.TransportError as e:
            raise _AttemptFailed("connection", f"{type(e).__name__}: {e}") from e
        if r.status_code >= 500:
            raise _AttemptFailed("http_5xx", f"HTTP {r.status_code}: {r.text[:200]}")
        if r.status_code == 429:
            raise _AttemptFailed("http_429", f"HTTP 429: {r.text[:200]}")
        if r.status_code >= 400:
            raise _AttemptFailed(f"http_{r.status_code}", r.text[:300])
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _AttemptFailed("bad_response", f"not a chat completion: {r.text[:200]!r}") from e
        if content is None:
            return ""
        if not isinstance(content, str):
            raise _AttemptFailed("bad_response", f"message content is {type(content).__name__}")
        return content

    def _ask(self, messages: list[dict[str, str]], params: dict[str, Any]) -> tuple[str, int]:
        """The answer text and the number of attempts; raises _AttemptFailed once retries are spent."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(messages, params), attempt
            except _AttemptFailed as e:
                if e.reason not in RETRYABLE or attempt > self.max_retries:
                    e.detail = f"{e.detail} (after {attempt} attempt{'s' * (attempt > 1)})"
                    raise
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))

    def chat(self, messages: list[dict[str, str]], **params: Any) -> str:
        """One answer (cached when a cache is set); raises `EndpointError` once retries are spent."""
        key = self.cache_key(messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        try:
            text, _ = self._ask(messages, params)
        except _AttemptFailed as e:
            raise EndpointError(f"{self.url}: {e.reason}: {e.detail}") from e
        self.cache.put(key, text, self.model)
        return text

    # -- many requests -------------------------------------------------------------------------------

    def _one(self, job: Job, parse: Callable[[str], Any] | None) -> Outcome:
        key = self.cache_key(job.messages, job.params)
        raw = self.cache.get(key)
        cached, attempts = raw is not None, 0
        if raw is None:
            try:
                raw, attempts = self._ask(job.messages, job.params)
            except _AttemptFailed as e:
                return Outcome(job, False, reason=e.reason, detail=e.detail)
            self.cache.put(key, raw, self.model)  # kept even if it does not parse: it is an answer
        return _parse(job, raw, parse, cached, attempts)

    def run(
        self,
        jobs: Iterable[Job],
        parse: Callable[[str], Any] | None = None,
        *,
        on_outcome: Callable[[Outcome], object] | None = None,
        progress: bool | str = False,
        total: int | None = None,
    ) -> RunReport:
        """Answer every job (cache first, then the endpoint with `concurrency` requests in flight);
        `on_outcome` is called in this thread, in completion order, once per job."""
        report = RunReport()
        bar = _bar(progress, total)
        try:
            for outcome in self._iter(jobs, parse):
                report.add(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=report.n_failed, cached=report.cached, refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return report

    def _iter(self, jobs: Iterable[Job], parse: Callable[[str], Any] | None) -> Iterator[Outcome]:
        it = iter(jobs)
        window = self.concurrency * 2  # bounded: a million-document input never sits in memory
        pending: set[Future[Outcome]] = set()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="gaperon-judge")
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    job = next(it, None)
                    if job is None:
                        exhausted = True
                        break
                    hit = self.cache.get(self.cache_key(job.messages, job.params))
                    if hit is not None:  # answered before: no thread, no request
                        yield _parse(job, hit, parse, True, 0)
                        continue
                    pending.add(pool.submit(self._one, job, parse))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _parse(job: Job, raw: str, parse: Callable[[str], Any] | None, cached: bool, attempts: int) -> Outcome:
    if parse is None:
        return Outcome(job, True, value=raw, raw=raw, cached=cached, attempts=attempts)
    try:
        value = parse(raw)
    except ParseError as e:
        return Outcome(
            job, False, raw=raw, reason=e.reason, detail=f"{e}; answer: {raw[:200]!r}", cached=cached
        )
    return Outcome(job, True, value=value, raw=raw, cached=cached, attempts=attempts)


def _bar(progress: bool | str, total: int | None):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=progress if isinstance(progress, str) else "judge", unit="req")
