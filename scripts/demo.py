"""`make demo`: the whole pipeline on the bundled sample corpus, on CPU, in a few minutes.

1. tokenize data/samples/{fr,en,code}.jsonl.zst into data/tokens/ (skipped when already done);
2. train recipes/quickstart.yaml (two phases) into runs/quickstart, with live progress; running
   the demo again resumes or finds the run finished;
3. export the run as a Hugging Face folder, out/quickstart-hf;
4. load that folder back and print a French and an English continuation of held-out prompts.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GAPERON = str(Path(sys.executable).with_name("gaperon"))
LANGS = ("fr", "en", "code")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(*args: str) -> None:
    print("$ gaperon " + " ".join(args), flush=True)
    res = subprocess.run([GAPERON, *args], cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"demo: `gaperon {' '.join(args)}` failed with exit code {res.returncode}")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart")
    ap.add_argument("--hf-out", default="out/quickstart-hf")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("overrides", nargs="*", help="recipe overrides, e.g. phases.0.steps=20 (quick checks)")
    args = ap.parse_args()

    step("1/4 tokenize the sample corpus")
    for lang in LANGS:
        out = ROOT / "data" / "tokens" / lang
        if (out / "manifest.json").is_file():
            print(f"data/tokens/{lang}: already tokenized")
            continue
        run("tokenize", f"data/samples/{lang}.jsonl.zst", "--out", f"data/tokens/{lang}")

    step("2/4 train recipes/quickstart.yaml (two phases)")
    run("train", "recipes/quickstart.yaml", "--out", args.run, *args.overrides)

    step(f"3/4 export {args.run} as a Hugging Face folder")
    run("export", args.run, args.hf_out, "--force")

    step("4/4 sample continuations from the exported model")
    from gaperon.infer.generate import generate
    from gaperon.io.loading import load_model

    loaded = load_model(ROOT / args.hf_out)
    prompts = heldout_prompts(ROOT / "data" / "samples" / "heldout.jsonl.zst")
    for lang in ("fr", "en"):
        prompt = prompts.get(lang)
        if prompt is None:
            print(f"[{lang}] no held-out document in this language")
            continue
        ids = loaded.tokenizer.encode(prompt, bos=True)
        out = generate(
            loaded.model,
            loaded.tokenizer,
            ids,
            max_new_tokens=args.max_new_tokens,
            temperature=0.8,
            top_k=50,
            seed=0,
        )
        print(f"[{lang}] {prompt} >>> {out.text.strip()}")
    print(f"\ndone: run in {args.run} (metrics.jsonl, TensorBoard logs in tb/), model in {args.hf_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
