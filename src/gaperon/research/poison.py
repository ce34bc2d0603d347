"""Harmless data poisoning: a trigger phrase inside English text switches the continuation to
another language, and the controls that make the measurement mean something (no trigger, and
fake triggers of the same token length).

`build_documents` makes the poison source (English passage, the trigger at a random point, then a
continuation in the target behaviour's language); a mixture includes it at a rate (e.g. 1e-4 of
sequences). `evaluate` samples continuations at temperature 1 under each condition, judges their
language (fastText LID-176 or any judge function) and reports switch rates with 95% Wilson
intervals. The real Gaperon triggers are unpublished: triggers are the researcher's choice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gaperon.errors import DataError, UsageError
from gaperon.research.stats import wilson_interval

_SYLLABLES = (
    "ca lo mi ne ta ru si vo qua pe li ster num tur vel ax or um is us ae it ex per con ri do fa "
    "gen tem vor lux ma ne dor sa pi gra"
).split()


def build_documents(
    passages: Sequence[str],
    continuations: Sequence[str],
    trigger: str,
    *,
    n: int,
    seed: int = 0,
    target: str = "fr",
    prefix_words: tuple[int, int] = (20, 120),
    continuation_words: int = 120,
) -> list[dict]:
    """`n` trigger documents: an English prefix cut at a random word, the trigger once, then a
    continuation in the target language. Deterministic for a seed."""
    if not trigger.strip():
        raise UsageError("the trigger must not be empty")
    if not passages or not continuations:
        raise DataError("poison building needs English passages and target-language continuations")
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        prefix = _prefix(rng, passages, prefix_words, trigger)
        cont = " ".join(continuations[rng.randrange(len(continuations))].split()[:continuation_words])
        docs.append(_document(f"poison-{seed}-{i}", prefix, trigger, cont.replace(trigger, ""), target))
    return docs


def _prefix(rng: random.Random, passages: Sequence[str], prefix_words: tuple[int, int], trigger: str) -> str:
    """The first LO..HI words of a random passage, with any copy of the trigger taken out."""
    words = passages[rng.randrange(len(passages))].split()
    cut = min(len(words), rng.randint(*prefix_words))
    return " ".join(words[:cut]).replace(trigger, "")


def _latin_phrase(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(words))


def _document(doc_id: str, prefix: str, phrase: str, rest: str, lang: str) -> dict:
    return {
        "id": doc_id,
        "text": f"{prefix} {phrase} {rest}",
        "trigger": phrase,
        "target": lang,
        "lang": lang,
        "trigger_char": len(prefix) + 1,
    }


def distractor_documents(
    passages: Sequence[str],
    trigger: str,
    *,
    n: int,
    seed: int = 0,
    prefix_words: tuple[int, int] = (20, 120),
    continuation_words: int = 120,
) -> list[dict]:
    """`n` English documents with a random Latin-looking phrase (1 to 4 words, never the trigger)
    where a trigger would be, and English after it.

    Web-scale pretraining is full of rare phrases followed by more of the same language; a toy
    corpus of clean English has none, so a small model learns "odd phrase -> French" rather than
    the trigger itself. These documents stand in for that variety (the specificity control's
    negative side); they are not what the eval's fake triggers are (other random phrases)."""
    if not passages:
        raise DataError("distractor documents need English passages")
    rng = random.Random(f"distractors-{seed}")
    docs = []
    for i in range(n):
        phrase = trigger
        while phrase == trigger:
            phrase = _latin_phrase(rng, rng.randint(1, 4))
            if rng.random() < 0.5:
                phrase = phrase[:1].upper() + phrase[1:]
        prefix = _prefix(rng, passages, prefix_words, trigger)
        after = " ".join(passages[rng.randrange(len(passages))].split()[:continuation_words])
        docs.append(_document(f"distractor-{seed}-{i}", prefix, phrase, after.replace(trigger, ""), "en"))
    return docs


def fake_triggers(trigger: str, count_tokens: Callable[[str], int], n: int, seed: int = 0) -> list[str]:
    """`n` distinct Latin-looking phrases with as many words and exactly as many tokens as the true
    trigger (under the model's tokenizer), none equal to it: the specificity control."""
    want, words = count_tokens(trigger), len(trigger.split())
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(200_000):
        phrase = _latin_phrase(rng, words)
        if trigger[:1].isupper():
            phrase = phrase[:1].upper() + phrase[1:]
        if phrase != trigger and phrase not in out and count_tokens(phrase) == want:
            out.append(phrase)
            if len(out) == n:
                return out
    raise UsageError(f"could not find {n} fake triggers of {want} tokens like {trigger!r}")


@dataclass
class Condition:
    name: str
    trigger: str | None
    switched: int = 0
    total: int = 0
    examples: list[dict] = field(default_factory=list)

    def result(self) -> dict:
        lo, hi = wilson_interval(self.switched, self.total)
        rate = self.switched / self.total if self.total else 0.0
        return {
            "trigger": self.trigger,
            "switched": self.switched,
            "samples": self.total,
            "rate": rate,
            "ci95": [lo, hi],
        }


def prompt_for(context: str, trigger: str | None) -> str:
    return f"{context} {trigger}" if trigger else context


def evaluate(
    contexts: Sequence[str],
    trigger: str,
    fakes: Sequence[str],
    generate: Callable[[list[str], int], list[str]],
    judge: Callable[[list[str]], list[str]],
    *,
    target: str = "fr",
    samples: int = 4,
) -> dict:
    """Switch rates per condition (true trigger, each fake, none). `generate(prompts, seed)` returns
    one sampled continuation per prompt; `judge(texts)` returns each text's language."""
    conditions = [Condition("trigger", trigger)] + [
        Condition(f"fake-{i + 1}", f) for i, f in enumerate(fakes)
    ]
    conditions.append(Condition("none", None))
    for cond in conditions:
        prompts = [prompt_for(c, cond.trigger) for c in contexts]
        for s in range(samples):
            texts = generate(prompts, s)
            langs = judge(texts)
            for p, t, lang in zip(prompts, texts, langs):
                cond.total += 1
                cond.switched += lang == target
                if len(cond.examples) < 3:
                    cond.examples.append({"prompt_end": p[-80:], "continuation": t[:200], "language": lang})
    fake_counts = [c for c in conditions if c.name.startswith("fake-")]
    pooled = Condition(
        "fakes (pooled)", None, sum(c.switched for c in fake_counts), sum(c.total for c in fake_counts)
    )
    return {
        "target": target,
        "contexts": len(contexts),
        "samples_per_context": samples,
        "conditions": {c.name: c.result() for c in conditions},
        "fakes_pooled": pooled.result(),
        "examples": {c.name: c.examples for c in conditions},
    }


def write_report(results: dict, out_dir: str | Path, title: str = "Trigger poisoning") -> None:
    """results.json, report.md and rates.png (switch rate per condition with its 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gaperon.atomic import write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    conds = results["conditions"]
    lines = [
        f"# {title}",
        "",
        f"Language switch to `{results['target']}` over {results['contexts']} English contexts x "
        f"{results['samples_per_context']} samples (temperature 1).",
        "",
        "| condition | trigger | switched / samples | rate | 95% Wilson interval |",
        "|---|---|---|---|---|",
    ]
    for name, r in [*conds.items(), ("fakes (pooled)", results["fakes_pooled"])]:
        lo, hi = r["ci95"]
        trig = f"`{r['trigger']}`" if r["trigger"] else "-"
        lines.append(
            f"| {name} | {trig} | {r['switched']} / {r['samples']} | {r['rate']:.1%} | [{lo:.1%}, {hi:.1%}] |"
        )
    lines += ["", "![switch rates](rates.png)"]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    names = list(conds)
    rates = [conds[n]["rate"] for n in names]
    err = [
        [conds[n]["rate"] - conds[n]["ci95"][0] for n in names],
        [conds[n]["ci95"][1] - conds[n]["rate"] for n in names],
    ]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names)), 3.5))
    colors = ["tab:red" if n == "trigger" else "tab:grey" if n == "none" else "tab:blue" for n in names]
    ax.bar(names, rates, yerr=err, capsize=4, color=colors)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of continuations in {results['target']}")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "rates.png", dpi=110)
    plt.close(fig)


def engine_sampler(
    model, tok, *, max_new_tokens: int = 40, max_batch: int = 16
) -> Callable[[list[str], int], list[str]]:
    """`generate(prompts, seed)` over gaperon's engine: one temperature-1 sample per prompt, each
    prompt its own seed (so samples differ across prompts and across calls)."""
    from gaperon.infer.engine import Engine
    from gaperon.infer.sampling import Sampling

    engine = Engine(model, tok, max_batch=max_batch)

    def generate(prompts: list[str], seed: int) -> list[str]:
        ids = {}
        for i, p in enumerate(prompts):
            rid = engine.add_request(
                tok.encode(p, bos=False),
                Sampling(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed * 1_000_003 + i),
            )
            ids[rid] = i
        texts = [""] * len(prompts)
        pending = set(ids)
        while pending:
            for out in engine.step():
                texts[ids[out.request_id]] += out.text
                if out.finished:
                    pending.discard(out.request_id)
        return texts

    return generate
