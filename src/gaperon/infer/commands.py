"""What `gaperon generate`, `gaperon chat` and `gaperon serve` do, as plain functions.

Each loads the model (and the optional draft) through `gaperon.io.loading.load_model`, so every
accepted source works: a GGUF file, a Hugging Face folder, a training run; all three run the engine.
The `check_*` functions validate arguments without loading anything: the CLI calls them first.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gaperon.errors import DataError, ModelFormatError, UsageError
from gaperon.infer.options import Sampling

if TYPE_CHECKING:  # the argument checks below must not import torch or a tokenizer
    import torch

    from gaperon.model.protocol import CausalLM
    from gaperon.tokenizer.protocol import TextTokenizer

DTYPES = ("float32", "bfloat16", "float16")


# ---- arguments, checked before any loading --------------------------------------------------------
def check_device(device: str | None) -> torch.device:
    """The device to load on; an unknown or absent device is a usage error (nothing loaded yet)."""
    if device not in (None, "auto", "cpu") and not device.startswith(("cuda", "cpu:")):
        raise UsageError(f"--device {device!r}: only cpu, cuda and cuda:N are supported")
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device (try cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: this machine (or this torch build) has no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
    return dev


def check_dtype(dtype: str | None) -> str | None:
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


def check_draft_k(k: int) -> int:
    if k < 1:
        raise UsageError(f"--draft-k must be >= 1 (draft tokens per step), got {k}")
    return k


def generation_defaults(model_path: str | Path) -> dict[str, Any]:
    """The model's own generation_config.json (a Hugging Face folder's), or {} when it has none."""
    path = Path(model_path) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def resolve_sampling(model_path: str | Path, given: dict[str, Any], max_new_tokens: int) -> Sampling:
    """Sampling from what the user gave (None = not given), else the model's generation_config.json,
    else greedy with `max_new_tokens`."""
    base = Sampling.from_generation_config(generation_defaults(model_path), max_new_tokens=max_new_tokens)
    return base.replace(**{k: v for k, v in given.items() if v is not None})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, made before the model loads: a taken port fails in a second."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be in 0..65535 (0 = any free port), got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: the address {host}:{port} is already in use") from None
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    return sock


def read_api_key(key: str | None, key_file: str | None, env: dict[str, str]) -> str | None:
    """--api-key, else --api-key-file (first line), else $GAPERON_API_KEY; None = no key required."""
    if key is not None:
        return key
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"--api-key-file {key_file}: {e.strerror}") from None
        if not text:
            raise UsageError(f"--api-key-file {key_file} is empty")
        return text.splitlines()[0].strip()
    return env.get("GAPERON_API_KEY") or None


# ---- loading -----------------------------------------------------------------------------------------
def load(
    path: str | Path, device: str | None = None, dtype: str | None = None
) -> tuple[CausalLM, TextTokenizer]:
    """(model, tokenizer) ready for inference; bf16 on GPU unless told otherwise."""
    from gaperon.io.loading import load_model

    dev = check_device(device)
    if dtype is None and dev.type == "cuda":
        dtype = "bfloat16"
    loaded = load_model(path, device=dev, dtype=dtype)
    if loaded.tokenizer is None:
        raise ModelFormatError(f"{path}: the model has no tokenizer, so it cannot generate text")
    model: CausalLM = loaded.model.eval()
    return model, loaded.tokenizer


def load_draft(
    path: str | Path | None, tok: TextTokenizer, device: str | None, dtype: str | None
) -> CausalLM | None:
    """The draft model, refused unless its tokenizer gives the target's ids."""
    if path is None:
        return None
    from gaperon.infer.speculative import check_draft_tokenizer

    draft, draft_tok = load(path, device, dtype)
    check_draft_tokenizer(tok, draft_tok, str(path))
    return draft


def encode_prompt(tok: TextTokenizer, text: str, chat: bool, system: str | None = None) -> list[int]:
    if chat:
        from gaperon.infer.chat import encode_messages

        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        return encode_messages(tok, messages)
    from gaperon.tokenizer.protocol import prompt_bos

    return tok.encode(text, bos=prompt_bos(tok))


# ---- the verbs ---------------------------------------------------------------------------------------
def generate_command(
    model_path: str,
    prompt: str,
    *,
    chat: bool = False,
    system: str | None = None,
    sampling: Sampling,
    draft_path: str | None = None,
    draft_k: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Stream the continuation of `prompt` to `out` (default stdout), on the engine."""
    from gaperon.infer.engine import build_engine, stream_request
    from gaperon.infer.speculative import SpeculativeEngine

    out, err = out or sys.stdout, err or sys.stderr
    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, tok, device, dtype)
    ids = encode_prompt(tok, prompt, chat, system)
    engine = build_engine(model, tok, max_batch=1, draft=draft, draft_k=draft_k)
    finish = None
    for step in stream_request(engine, ids, sampling):
        out.write(step.text)
        out.flush()
        finish = step.finish_reason
    out.write("\n")
    if finish == "length":
        err.write(f"(stopped at the token limit: {sampling.max_new_tokens} new tokens)\n")
    if isinstance(engine, SpeculativeEngine):
        err.write(f"speculative decoding: acceptance rate {engine.acceptance_rate():.3f}\n")
    return 0


def chat_command(
    model_path: str,
    *,
    system: str | None = None,
    messages: list[str] | None = None,
    messages_json: str | None = None,
    sampling: Sampling,
    draft_path: str | None = None,
    draft_k: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Interactive chat; or, with `messages` (successive user turns) or `messages_json` (a file or '-'
    holding a [{role, content}, ...] list), print the replies and exit."""
    from gaperon.infer.chat import ChatSession, run_interactive
    from gaperon.infer.engine import build_engine

    stdin, out = stdin or sys.stdin, out or sys.stdout
    history = read_messages(messages_json, stdin) if messages_json is not None else None
    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, tok, device, dtype)
    engine = build_engine(model, tok, max_batch=1, draft=draft, draft_k=draft_k)
    session = ChatSession(engine, tok, system=system, sampling=sampling)
    if history is not None:
        out.write(session.complete(history) + "\n")
        return 0
    if messages:
        for text in messages:
            for delta in session.reply(text):
                out.write(delta)
                out.flush()
            out.write("\n")
        return 0
    return run_interactive(session, stdin, out)


def read_messages(source: str, stdin: TextIO) -> list[dict[str, str]]:
    """A chat history from a JSON file (or '-'): a list of {role, content}, or {"messages": [...]}."""
    name = "standard input" if source == "-" else source
    try:
        text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{name}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise DataError(f"{name}: expected a non-empty JSON list of {{'role', 'content'}} messages")
    for i, m in enumerate(data):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise DataError(f"{name}: message {i} must be an object with string 'role' and 'content'")
    return data


def serve_command(
    model_path: str,
    *,
    sock: socket.socket,
    api_key: str | None = None,
    draft_path: str | None = None,
    draft_k: int = 4,
    max_batch: int = 8,
    max_len: int | None = None,
    model_name: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_pending: int = 1024,
    defaults: Sampling | None = None,
) -> int:
    """Serve the model over the OpenAI-compatible API on the already bound `sock` until interrupted."""
    from gaperon.infer.engine import build_engine
    from gaperon.infer.server import create_app, serve

    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, tok, device, dtype)
    engine = build_engine(model, tok, max_batch=max_batch, max_len=max_len, draft=draft, draft_k=draft_k)
    name = model_name or Path(model_path).stem
    host, port = sock.getsockname()[:2]
    batching = (
        "one request at a time (speculative decoding does not batch)"
        if draft is not None
        else f"max batch {max_batch}"
    )
    print(
        f"serving {name} on http://{host}:{port}/v1 ({batching}, context {engine.max_len})", file=sys.stderr
    )
    app = create_app(
        engine, tok, model_name=name, api_key=api_key, max_pending=max_pending, defaults=defaults
    )
    serve(app, sock)
    return 0
