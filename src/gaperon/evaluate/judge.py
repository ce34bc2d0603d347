"""Generation quality by an LLM judge: generations of several models on FR/EN prompts, then scores.

Two steps, each resumable (append-only, fsynced jsonl; answers also kept in the judge client's
cache, so a rerun asks nothing twice):

1. `generate`: each model answers every prompt, through any OpenAI-compatible endpoint or in
   process (a GGUF / Hugging Face folder / training run loaded with gaperon's engine); written to
   `DIR/generations/NAME.jsonl`.
2. `score`: a judge (any OpenAI-compatible endpoint) rates the generations
   - absolute: 1-10 against a rubric in the prompt's language (`prompts/absolute_{en,fr}.txt`);
   - pairwise: for each pair of models, A/B asked in both orders; a verdict counts only when both
     orders agree (the same model wins, or both say tie), otherwise it is "inconsistent".
   Answers not in the asked format are counted per reason, never dropped. Results land in
   `DIR/judge/{absolute,pairwise}.{json,md,png}`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gaperon.atomic import write_json, write_text
from gaperon.errors import DataError, ModelFormatError, UsageError
from gaperon.judge import Job, JudgeClient, Outcome, ParseError
from gaperon.judge.language import guess_language

PROMPTS_DIR = Path(__file__).parent / "prompts"
_SCORE_RE = re.compile(r"^\W*score\W*:\s*\**\s*(\d{1,2})\s*(?:/\s*10)?\W*$", re.IGNORECASE | re.MULTILINE)
_VERDICT_RE = re.compile(r"^\W*verdict\W*:\s*\**\s*(A|B|tie)\b\W*$", re.IGNORECASE | re.MULTILINE)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ModelSpec:
    """A model to generate with: `NAME=SERVED@URL`, `NAME=URL` (served name NAME) or `NAME=PATH`."""

    name: str
    endpoint: str | None = None
    served: str | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, source = text.partition("=")
        if not sep or not source:
            raise UsageError(f"--model {text!r}: expected NAME=URL, NAME=SERVED@URL or NAME=PATH")
        if not _NAME_RE.match(name):
            raise UsageError(f"--model {text!r}: NAME may hold letters, digits, '.', '_' and '-' only")
        served, at, url = source.rpartition("@")
        if at and url.startswith(("http://", "https://")):
            return cls(name, endpoint=url, served=served)
        if source.startswith(("http://", "https://")):
            return cls(name, endpoint=source, served=name)
        return cls(name, path=source)


# -- prompts ---------------------------------------------------------------------------------------


def load_prompts(files: Iterable[str | Path] = (), languages: Iterable[str] = ("en", "fr")) -> list[dict]:
    """The bundled prompt sets of `languages`, or the user's jsonl files ({"id", "prompt",
    "language"?}); prompt ids must be unique."""
    files = list(files) or [PROMPTS_DIR / f"judge_{lang}.jsonl" for lang in languages]
    rows: list[dict] = []
    seen: set[str] = set()
    for path in map(Path, files):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{path}:{n}: not JSON ({e})") from e
                if (
                    not isinstance(obj, dict)
                    or not isinstance(obj.get("prompt"), str)
                    or not obj["prompt"].strip()
                ):
                    raise DataError(f"{path}:{n}: field 'prompt' missing or empty")
                pid = str(obj.get("id", f"{path.stem}-{n}"))
                if pid in seen:
                    raise DataError(f"{path}:{n}: duplicate prompt id {pid!r}")
                seen.add(pid)
                lang = obj.get("language")
                if not isinstance(lang, str):
                    lang = guess_language(obj["prompt"])
                rows.append(
                    {"id": pid, "prompt": obj["prompt"], "language": "fr" if lang.startswith("fr") else "en"}
                )
    if not rows:
        raise DataError(f"{', '.join(map(str, files))}: no prompt")
    return rows


def template(kind: str, language: str) -> str:
    return (PROMPTS_DIR / f"{kind}_{'fr' if language == 'fr' else 'en'}.txt").read_text(encoding="utf-8")


# -- step 1: generations ---------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    """Records of an append-only jsonl; a torn last line (a kill mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise DataError(f"{path}:{n}: not JSON ({e})") from e
    return out


class _Appender:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, rec: dict) -> None:
        self.fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def generate(
    models: list[ModelSpec],
    out_dir: str | Path,
    prompts: list[dict],
    *,
    max_tokens: int = 512,
    temperature: float = 0.0,
    concurrency: int = 4,
    max_retries: int = 3,
    timeout_s: float = 120.0,
    api_key: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, dict]:
    """Write DIR/generations/NAME.jsonl ({"id", "language", "prompt", "output", "model"}) for each
    model, skipping prompts already answered. Returns per-model counts."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"model names must be unique, got {names}")
    summary = {}
    for spec in models:
        path = Path(out_dir) / "generations" / f"{spec.name}.jsonl"
        done = {r["id"] for r in _read_jsonl(path)}
        todo = [p for p in prompts if p["id"] not in done]
        writer = _Appender(path)
        try:
            if spec.endpoint is not None:
                failed = _generate_remote(
                    spec,
                    todo,
                    writer,
                    path,
                    max_tokens,
                    temperature,
                    concurrency,
                    max_retries,
                    timeout_s,
                    api_key,
                    progress,
                )
            else:
                failed = _generate_local(spec, todo, writer, max_tokens, temperature, device)
        finally:
            writer.close()
        summary[spec.name] = {
            "written": len(todo) - sum(failed.values()),
            "already_done": len(done),
            "failed": failed,
        }
    return summary


def _record(spec: ModelSpec, p: dict, text: str) -> dict:
    return {
        "id": p["id"],
        "language": p["language"],
        "prompt": p["prompt"],
        "output": text,
        "model": spec.name,
    }


def _generate_remote(
    spec, todo, writer, path, max_tokens, temperature, concurrency, max_retries, timeout_s, api_key, progress
) -> dict[str, int]:
    by_id = {p["id"]: p for p in todo}
    params = {"max_tokens": max_tokens, "temperature": temperature}
    jobs = [Job(p["id"], [{"role": "user", "content": p["prompt"]}], params) for p in todo]
    with JudgeClient(
        spec.endpoint,
        spec.served or spec.name,
        api_key=api_key,
        timeout_s=timeout_s,
        max_retries=max_retries,
        concurrency=concurrency,
        cache=path.with_name(path.name + ".cache.jsonl"),
    ) as client:
        report = client.run(
            jobs,
            None,
            on_outcome=lambda o: o.ok and writer.write(_record(spec, by_id[o.job.key], o.value)),
            progress=f"generate {spec.name}" if progress else False,
            total=len(jobs),
        )
    return report.failed


def _generate_local(spec, todo, writer, max_tokens, temperature, device) -> dict[str, int]:
    if not todo:
        return {}
    from gaperon.infer.engine import Engine
    from gaperon.io.loading import load_model

    loaded = load_model(spec.path, device=device)
    tok = loaded.tokenizer
    if tok is None:
        raise ModelFormatError(f"{spec.path}: no tokenizer beside the model, cannot apply a chat template")
    ids = [tok.encode_chat([{"role": "user", "content": p["prompt"]}]) for p in todo]
    # A KV cache sized for these prompts, not for the model's whole context.
    max_len = min(loaded.model.cfg.max_seq_len, max(map(len, ids)) + max_tokens)
    engine = Engine(loaded.model.eval(), tok, max_batch=8, max_len=max_len)
    results = engine.generate(ids, max_new_tokens=max_tokens, temperature=temperature, seed=0)
    for p, r in zip(todo, results):
        writer.write(_record(spec, p, r.text))
    return {}


def load_generations(out_dir: str | Path) -> dict[str, dict[str, dict]]:
    """{model name: {prompt id: record}} from DIR/generations/*.jsonl."""
    folder = Path(out_dir) / "generations"
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    files = [f for f in files if not f.name.endswith(".cache.jsonl")]
    if not files:
        raise DataError(f"{folder}: no generations (run `gaperon judge generate` first)")
    return {f.stem: {r["id"]: r for r in _read_jsonl(f)} for f in files}


# -- step 2: judging -------------------------------------------------------------------------------


def parse_score(text: str) -> int:
    found = _SCORE_RE.findall(text)
    if not found:
        raise ParseError("no 'Score: N' line", reason="no_score")
    score = int(found[-1])
    if not 1 <= score <= 10:
        raise ParseError(f"score {score} outside 1-10", reason="score_out_of_range")
    return score


def parse_verdict(text: str) -> str:
    found = _VERDICT_RE.findall(text)
    if not found:
        raise ParseError("no 'Verdict: A|B|tie' line", reason="no_verdict")
    v = found[-1]
    return "tie" if v.lower() == "tie" else v.upper()


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def score_absolute(gens: dict[str, dict[str, dict]], client: JudgeClient, progress: bool = True) -> dict:
    jobs = []
    for name, recs in gens.items():
        for pid, r in recs.items():
            text = (
                template("absolute", r["language"])
                .replace("{prompt}", r["prompt"])
                .replace("{answer}", r["output"])
            )
            jobs.append(
                Job(
                    f"{name}\t{pid}",
                    [{"role": "user", "content": text}],
                    {"temperature": 0.0, "max_tokens": 256},
                )
            )
    scores: dict[str, dict[str, list[int]]] = {name: {} for name in gens}
    report = client.run(
        jobs,
        parse_score,
        on_outcome=lambda o: _add_score(scores, gens, o),
        progress="judge absolute" if progress else False,
        total=len(jobs),
    )
    models = {}
    for name, by_lang in scores.items():
        every = [s for xs in by_lang.values() for s in xs]
        models[name] = {
            "mean": _mean([float(s) for s in every]),
            "n": len(every),
            "by_language": {
                lang: {"mean": _mean([float(s) for s in xs]), "n": len(xs)}
                for lang, xs in sorted(by_lang.items())
            },
        }
    return {"mode": "absolute", "judge": client.model, "models": models, "requests": report.to_dict()}


def _add_score(scores, gens, o: Outcome) -> None:
    if o.ok:
        name, pid = o.job.key.split("\t", 1)
        scores[name].setdefault(gens[name][pid]["language"], []).append(o.value)


def score_pairwise(gens: dict[str, dict[str, dict]], client: JudgeClient, progress: bool = True) -> dict:
    jobs = []
    pairs = list(itertools.combinations(sorted(gens), 2))
    for a, b in pairs:
        for pid in sorted(set(gens[a]) & set(gens[b])):
            r = gens[a][pid]
            for order, (x, y) in (("ab", (a, b)), ("ba", (b, a))):
                text = (
                    template("pairwise", r["language"])
                    .replace("{prompt}", r["prompt"])
                    .replace("{answer_a}", gens[x][pid]["output"])
                    .replace("{answer_b}", gens[y][pid]["output"])
                )
                key = f"{a}\t{b}\t{pid}\t{order}"
                jobs.append(
                    Job(key, [{"role": "user", "content": text}], {"temperature": 0.0, "max_tokens": 256})
                )
    verdicts: dict[tuple[str, ...], dict[str, str]] = {}

    def keep(o: Outcome) -> None:
        if o.ok:
            *pair_pid, order = o.job.key.split("\t")
            verdicts.setdefault(tuple(pair_pid), {})[order] = o.value

    report = client.run(
        jobs,
        parse_verdict,
        on_outcome=keep,
        progress="judge pairwise" if progress else False,
        total=len(jobs),
    )
    results = {}
    for a, b in pairs:
        c = {"wins_a": 0, "wins_b": 0, "ties": 0, "inconsistent": 0, "incomplete": 0}
        by_lang: dict[str, dict[str, int]] = {}
        for pid in sorted(set(gens[a]) & set(gens[b])):
            v = verdicts.get((a, b, pid), {})
            outcome = _combine(v.get("ab"), v.get("ba"))
            c[outcome] += 1
            lang = by_lang.setdefault(gens[a][pid]["language"], dict.fromkeys(c, 0))
            lang[outcome] += 1
        decided = c["wins_a"] + c["wins_b"] + c["ties"]
        win_rate = (c["wins_a"] + 0.5 * c["ties"]) / decided if decided else None
        results[f"{a} vs {b}"] = {"a": a, "b": b, **c, "win_rate_a": win_rate, "by_language": by_lang}
    return {"mode": "pairwise", "judge": client.model, "pairs": results, "requests": report.to_dict()}


def _combine(ab: str | None, ba: str | None) -> str:
    """Both orders must agree. In `ba` the answers were swapped: its 'A' is model b."""
    if ab is None or ba is None:
        return "incomplete"  # a request failed or did not parse: counted in the request report
    if ab == "tie" and ba == "tie":
        return "ties"
    if ab == "A" and ba == "B":
        return "wins_a"
    if ab == "B" and ba == "A":
        return "wins_b"
    return "inconsistent"


def score(
    out_dir: str | Path,
    *,
    endpoint: str,
    judge_model: str,
    mode: str = "absolute",
    api_key: str | None = None,
    concurrency: int = 4,
    max_retries: int = 3,
    timeout_s: float = 120.0,
    progress: bool = True,
) -> dict:
    """Judge DIR/generations and write DIR/judge/MODE.{json,md,png}; returns the JSON object."""
    if mode not in ("absolute", "pairwise"):
        raise UsageError(f"mode must be absolute or pairwise, got {mode!r}")
    gens = load_generations(out_dir)
    if mode == "pairwise" and len(gens) < 2:
        raise UsageError(f"pairwise mode needs generations of two models or more, found {sorted(gens)}")
    folder = Path(out_dir) / "judge"
    folder.mkdir(parents=True, exist_ok=True)
    with JudgeClient(
        endpoint,
        judge_model,
        api_key=api_key,
        timeout_s=timeout_s,
        max_retries=max_retries,
        concurrency=concurrency,
        cache=folder / "cache.jsonl",
    ) as client:
        result = (score_absolute if mode == "absolute" else score_pairwise)(gens, client, progress)
    write_json(folder / f"{mode}.json", result)
    write_text(folder / f"{mode}.md", to_markdown(result))
    plot(result, folder / f"{mode}.png")
    return result


# -- reports ---------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def to_markdown(result: dict) -> str:
    req = result["requests"]
    failed = ", ".join(f"{v} {k}" for k, v in sorted(req["failed"].items())) or "none"
    lines = [f"# LLM judge ({result['mode']}), judge model `{result['judge']}`", ""]
    if result["mode"] == "absolute":
        langs = sorted({lang for m in result["models"].values() for lang in m["by_language"]})
        lines += [
            "| model | mean (1-10) | n | " + " | ".join(langs) + " |",
            "|---|---|---|" + "---|" * len(langs),
        ]
        for name, m in sorted(result["models"].items()):
            cells = [_fmt(m["by_language"].get(lang, {}).get("mean")) for lang in langs]
            lines.append(f"| {name} | {_fmt(m['mean'])} | {m['n']} | " + " | ".join(cells) + " |")
    else:
        lines += [
            "| A | B | A wins | B wins | ties | inconsistent | incomplete | win rate A |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in result["pairs"].values():
            lines.append(
                f"| {p['a']} | {p['b']} | {p['wins_a']} | {p['wins_b']} | {p['ties']} | "
                f"{p['inconsistent']} | {p['incomplete']} | {_fmt(p['win_rate_a'])} |"
            )
        lines += ["", "A verdict counts only when both answer orders agree; ties count half in the win rate."]
    lines += [
        "",
        f"Judge requests: {req['done']} answered ({req['cached']} from cache); failed: {failed}.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if result["mode"] == "absolute":
        names = sorted(result["models"])
        langs = sorted({lang for m in result["models"].values() for lang in m["by_language"]})
        width = 0.8 / max(1, len(langs))
        for i, lang in enumerate(langs):
            ys = [result["models"][n]["by_language"].get(lang, {}).get("mean") or 0 for n in names]
            ax.bar([x + i * width for x in range(len(names))], ys, width, label=lang)
        ax.set_xticks([x + width * (len(langs) - 1) / 2 for x in range(len(names))], names)
        ax.set_ylim(0, 10)
        ax.set_ylabel("mean judge score (1-10)")
        ax.legend()
    else:
        pairs = list(result["pairs"].values())
        labels = [f"{p['a']} vs {p['b']}" for p in pairs]
        left = [0] * len(pairs)
        for key, color in (
            ("wins_a", "tab:blue"),
            ("ties", "tab:gray"),
            ("wins_b", "tab:orange"),
            ("inconsistent", "tab:red"),
        ):
            vals = [p[key] for p in pairs]
            ax.barh(labels, vals, left=left, color=color, label=key)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel("prompts")
        ax.legend(loc="lower right", fontsize=8)
    req = result["requests"]
    n_failed = sum(req["failed"].values())
    ax.set_title(f"LLM judge ({result['mode']}): {result['judge']}\n{req['done']} judged, {n_failed} failed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
