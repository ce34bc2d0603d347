"""`gaperon judge`: generation quality by an LLM judge (generate, then score)."""

from __future__ import annotations

import argparse
import json
import os

GENERATE_EXAMPLES = """examples:
  # two models served by `gaperon serve` / vLLM, answering the bundled FR and EN prompts
  gaperon judge generate --out runs/judge \\
      --model smol=smollm2@http://127.0.0.1:8000/v1 --model mine=http://127.0.0.1:8001/v1
  # in process, from a GGUF / Hugging Face folder / training run
  gaperon judge generate --out runs/judge --model smol=SmolLM2-135M-Instruct.Q4_1.gguf --max-tokens 256
"""

SCORE_EXAMPLES = """examples:
  gaperon judge score runs/judge --judge http://127.0.0.1:8002/v1 --judge-model llama-70b
  gaperon judge score runs/judge --judge http://127.0.0.1:8002/v1 --judge-model llama-70b --mode pairwise
Writes runs/judge/judge/MODE.json, MODE.md and MODE.png. Rerunning asks only what is missing.
"""


def _client_args(p: argparse.ArgumentParser, timeout: float) -> None:
    p.add_argument(
        "--api-key", default=None, help="bearer token (default: $GAPERON_API_KEY or $OPENAI_API_KEY)"
    )
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--retries", type=int, default=3, help="retries on timeouts, 5xx, 429 (default 3)")
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="generation quality judged by an LLM (generate, score)",
        description="Generations of one or more models on FR/EN prompts, judged by any "
        "OpenAI-compatible endpoint (absolute 1-10 with a rubric, or pairwise A/B with position swap).",
    )
    verbs = p.add_subparsers(dest="judge_verb", metavar="VERB")

    g = verbs.add_parser(
        "generate",
        help="answer the prompt set with each model",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument(
        "--out", required=True, help="output folder (generations land in OUT/generations/NAME.jsonl)"
    )
    g.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=SOURCE",
        help="NAME=URL, NAME=SERVED_NAME@URL (OpenAI-compatible endpoint) or NAME=PATH (in process); "
        "repeatable",
    )
    g.add_argument(
        "--prompts", action="append", default=[], metavar="FILE", help="jsonl of {id, prompt, language}"
    )
    g.add_argument("--languages", default="en,fr", help="bundled prompt sets to use (default en,fr)")
    g.add_argument("--max-tokens", type=int, default=512, help="default 512")
    g.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    g.add_argument("--device", default="cpu", help="for in-process models (default cpu)")
    _client_args(g, 120.0)
    g.set_defaults(func=_generate)

    s = verbs.add_parser(
        "score",
        help="judge the generations of a folder",
        epilog=SCORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("dir", metavar="DIR", help="the --out folder of `gaperon judge generate`")
    s.add_argument("--judge", required=True, metavar="URL", help="the judge's OpenAI-compatible endpoint")
    s.add_argument("--judge-model", required=True, help="the model name the judge endpoint serves")
    s.add_argument("--mode", choices=("absolute", "pairwise"), default="absolute", help="default absolute")
    _client_args(s, 120.0)
    s.set_defaults(func=_score)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get("GAPERON_API_KEY") or os.environ.get("OPENAI_API_KEY")


def _check(args: argparse.Namespace) -> None:
    from gaperon.errors import UsageError

    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")


def _generate(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError
    from gaperon.evaluate.judge import ModelSpec, generate, load_prompts

    _check(args)
    if args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    specs = [ModelSpec.parse(m) for m in args.model]
    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    if not args.prompts and not set(langs) <= {"en", "fr"}:
        raise UsageError(f"--languages: bundled prompt sets are en and fr, got {args.languages!r}")
    prompts = load_prompts(args.prompts, langs)
    summary = generate(
        specs,
        args.out,
        prompts,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        concurrency=args.concurrency,
        max_retries=args.retries,
        timeout_s=args.timeout,
        api_key=_api_key(args),
        device=args.device,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=2))
    return 1 if any(s["failed"] for s in summary.values()) else 0


def _score(args: argparse.Namespace) -> int:
    from gaperon.evaluate.judge import score, to_markdown

    _check(args)
    result = score(
        args.dir,
        endpoint=args.judge,
        judge_model=args.judge_model,
        mode=args.mode,
        api_key=_api_key(args),
        concurrency=args.concurrency,
        max_retries=args.retries,
        timeout_s=args.timeout,
        progress=not args.no_progress,
    )
    print(to_markdown(result))
    return 1 if result["requests"]["failed"] else 0
