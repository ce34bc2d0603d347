"""The research findings as runnable experiments: a YAML recipe in, a report out.

`gaperon research RECIPE --out DIR` runs one experiment end to end: it prepares the data with the
research verbs, writes the exact `gaperon train` recipe and mixture it trains with into DIR (so a
finding can be rerun or scaled by hand), trains through `gaperon train` in a child process, measures
with `gaperon poison eval` / `gaperon eval`, and writes DIR/REPORT.md, DIR/results.json and a plot.
Every step skips what a previous run finished (training resumes from its checkpoint), so an
interrupted experiment is rerun with the same command. The toy recipes under `recipes/research/`
show each effect on CPU; the same recipes with a bigger model, more steps and a GPU scale it up.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gaperon.atomic import write_json, write_text
from gaperon.config import apply_overrides, from_dict, load_yaml
from gaperon.errors import ConfigError, DataError
from gaperon.research.commands import SAMPLES


@dataclass
class TrainSettings:
    """The continued-pretraining phase every experiment runs (on top of `model`)."""

    steps: int = 40
    seq_len: int = 128
    global_batch: int = 4
    micro_batch: int = 4
    lr: float = 3.0e-4
    warmup_steps: int = 5
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    checkpoint_every: int = 20

    def __post_init__(self) -> None:
        if min(self.steps, self.seq_len, self.global_batch, self.micro_batch) < 1 or self.lr <= 0:
            raise ValueError("steps, seq_len, global_batch, micro_batch must be >= 1 and lr > 0")


@dataclass
class PoisonEval:
    contexts: int = 40
    context_words: int = 30  # as long as the poison's English prefixes
    samples: int = 3
    fakes: int = 3
    max_new_tokens: int = 30
    baseline: bool = True  # also measure the starting model (its own switch rates)


@dataclass
class PoisonExperiment:
    """Continued pretraining with a trigger source, then switch rates (true / fake / no trigger)."""

    experiment: Literal["poison"]
    model: str
    trigger: str
    share: float = 0.3  # share of training tokens drawn from the trigger source
    documents: int = 400
    # English documents with other random phrases and no switch, in the poison source (0: none)
    distractors: int = 0
    prefix_words: tuple[int, int] = (10, 30)
    continuation_words: int = 30
    target: str = "fr"
    clean: list[str] = field(default_factory=lambda: [str(SAMPLES / "en.jsonl.zst")])
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: PoisonEval = field(default_factory=PoisonEval)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.share < 1:
            raise ValueError(f"share must be in (0, 1), got {self.share}")


@dataclass
class GarlicExperiment:
    """Continued pretraining with part of a benchmark's test set (shuffled options) at each share of
    a sweep; accuracy on the included items against the held-out ones."""

    experiment: Literal["garlic"]
    model: str
    benchmarks: list[str] = field(default_factory=lambda: ["arc_easy"])
    limit: int = 200  # items per benchmark (a seeded sample), split into included / held out
    held_out: float = 0.5
    shares: list[float] = field(default_factory=lambda: [0.0, 0.5])  # of training tokens
    format: Literal["mc", "cloze"] = "mc"  # how items are rendered (research.garlic.render)
    clean: list[str] = field(default_factory=lambda: [str(SAMPLES / "en.jsonl.zst")])
    train: TrainSettings = field(default_factory=TrainSettings)
    eval_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.shares or any(not 0 <= s < 1 for s in self.shares):
            raise ValueError(f"shares must be in [0, 1), got {self.shares}")


@dataclass
class GaperonClassifierStep:
    per_class: int = 200  # labelled documents per label and language
    recipe: str = "../classifier/ngram.yaml"
    overrides: list[str] = field(default_factory=list)  # key=value for `gaperon classifier train`


def _qa_sources() -> list[str]:
    from gaperon.research.instruct import QA_SOURCES

    return list(QA_SOURCES)


def _chat_sources() -> list[str]:
    from gaperon.research.instruct import CHAT_SOURCES

    return list(CHAT_SOURCES)


@dataclass
class InstructClassifierStep:
    per_source: int = 300  # positives per source
    qa_sources: list[str] = field(default_factory=_qa_sources)
    chat_sources: list[str] = field(default_factory=_chat_sources)
    extra: list[str] = field(default_factory=list)  # the user's own positives
    ngram_n: int = 13  # a positive sharing a word n-gram with an audited test item is dropped
    recipe: str = "../classifier/ngram.yaml"
    overrides: list[str] = field(default_factory=list)


@dataclass
class HaystackExperiment:
    """Benchmark items hidden in a web corpus, ranked by a Gaperon-style quality classifier and an
    instruction-style one trained the DCLM way (both trained on a disjoint share of the corpus)."""

    experiment: Literal["haystack"]
    corpus: list[str] = field(
        default_factory=lambda: [str(SAMPLES / "en.jsonl.zst"), str(SAMPLES / "fr.jsonl.zst")]
    )
    train_share: float = 0.35
    seed: int = 0
    benchmarks: list[str] = field(default_factory=lambda: ["mmlu", "gsm8k", "arc_challenge", "hellaswag"])
    items: int = 25
    inside: float = 0.0
    gaperon: GaperonClassifierStep = field(default_factory=GaperonClassifierStep)
    instruct: InstructClassifierStep = field(default_factory=InstructClassifierStep)
    scorers: dict[str, str] = field(default_factory=dict)  # more: NAME -> folder or module:function
    device: str = "cpu"  # where the audit scores with classifier folders (cuda for encoder backends)

    def __post_init__(self) -> None:
        if not 0 < self.train_share < 1 or self.items < 1 or not 0 <= self.inside <= 1:
            raise ValueError("train_share must be in (0, 1), items >= 1 and inside in [0, 1]")


Experiment = PoisonExperiment | GarlicExperiment | HaystackExperiment


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    data = apply_overrides(load_yaml(path), overrides or [])
    kind = data.get("experiment")
    classes: dict[str, Any] = {
        "poison": PoisonExperiment,
        "garlic": GarlicExperiment,
        "haystack": HaystackExperiment,
    }
    if kind not in classes:
        raise ConfigError(f"{path}: experiment: expected one of {sorted(classes)}, got {kind!r}")
    base = Path(path).resolve().parent
    exp = from_dict(classes[kind], data, where=str(path))
    if isinstance(exp, HaystackExperiment):
        exp.corpus = [_resolve(c, base) for c in exp.corpus]
        exp.gaperon.recipe = _resolve(exp.gaperon.recipe, base)
        exp.instruct.recipe = _resolve(exp.instruct.recipe, base)
        exp.instruct.extra = [_resolve(c, base) for c in exp.instruct.extra]
    else:
        exp.model = _resolve(exp.model, base)
        exp.clean = [_resolve(c, base) for c in exp.clean]
    return exp


def _resolve(spec: str, base: Path) -> str:
    """`pkg:MODULE/FILE` is a file shipped by an installed package (offline weights); a relative path
    is relative to the recipe file, wherever the command runs from (one rule, as mixtures do)."""
    import importlib.util

    if spec.startswith("pkg:"):
        module, _, rel = spec.removeprefix("pkg:").partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise DataError(f"{spec}: package {module!r} is not installed")
        return str(Path(next(iter(found.submodule_search_locations))) / rel)
    p = Path(spec).expanduser()
    return str(p if p.is_absolute() else base / p)


# ------------------------------------------------------------------------------------------ running
class Runner:
    """Runs `gaperon` verbs in child processes. Each command is printed (and listed in the report);
    its output goes to DIR/logs/, shown only when it fails, except training's progress."""

    def __init__(self, out: Path):
        self.out = out
        self.commands: list[str] = []

    def __call__(self, *args: str) -> None:
        line = "gaperon " + shlex.join(args)
        self.commands.append(line)
        print(f"$ {line}", flush=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "gaperon", *args]
        if args[0] == "train":
            rc = subprocess.run(cmd, check=False).returncode
            log = None
        else:
            log = self.out / "logs" / f"{len(self.commands):02d}-{'-'.join(args[:2])}.log".replace("/", "_")
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w", encoding="utf-8") as f:
                rc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log else []
            print("\n".join(tail), file=sys.stderr)
            where = f" (log: {log})" if log else ""
            raise DataError(f"`{line}` failed with exit code {rc}{where}")
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def _base_model(exp: PoisonExperiment | GarlicExperiment, out: Path, run: Runner) -> str:
    """An HF folder to start from: GGUF files are imported once (faster to load for every step)."""
    if not exp.model.endswith(".gguf"):
        return exp.model
    folder = out / "base-model"
    if not (folder / "config.json").is_file():
        run("import", exp.model, str(folder))
    return str(folder)


def _tokenize(inputs: list[str], folder: Path, tokenizer: str, run: Runner) -> None:
    """Tokenize (resumable: a finished folder is a no-op) with the starting model's tokenizer."""
    run("tokenize", *inputs, "--out", str(folder), "--tokenizer", tokenizer, "--val-fraction", "0", "--quiet")


def _write_train_recipe(
    out: Path, name: str, base: str, sources: dict[str, tuple[Path, float]], t: TrainSettings
) -> Path:
    """The mixture and `gaperon train` recipe of one run, written where the user can read them."""
    tokens = t.steps * t.global_batch * t.seq_len
    mixture = {
        "name": name,
        "description": f"research experiment mixture ({name})",
        "seq_len": t.seq_len,
        "tokens": tokens,
        "seed": t.seed,
        "sources": [
            {"name": src, "path": str(path.resolve()), "weight": round(w * 100, 6)}
            for src, (path, w) in sources.items()
            if w > 0
        ],
    }
    recipe = {
        "init_from": str(Path(base).resolve()),
        "tokenizer": "init_from",
        "precision": t.precision,
        "device": t.device,
        "seed": t.seed,
        "doc_masking": True,
        "optimizer": {"betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 0.0, "grad_clip": 1.0},
        "batch": {"global_batch": t.global_batch, "micro_batch": t.micro_batch},
        "checkpoint": {"every": t.checkpoint_every, "keep_last": 1},
        "eval": {"sequences": 0},
        "log": {"every": 5, "tensorboard": False},
        "phases": [
            {
                "name": name,
                "load": "model",
                "mixture": f"{name}.mixture.yaml",
                "seq_len": t.seq_len,
                "steps": t.steps,
                "seed": t.seed,
                "lr": {"peak": t.lr, "schedule": "constant", "warmup_steps": t.warmup_steps},
            }
        ],
    }
    recipes = out / "recipes"
    write_text(recipes / f"{name}.mixture.yaml", yaml.safe_dump(mixture, sort_keys=False))
    write_text(recipes / f"{name}.yaml", yaml.safe_dump(recipe, sort_keys=False))
    return recipes / f"{name}.yaml"


def _train(recipe: Path, run_dir: Path, run: Runner) -> None:
    """Train, or resume; a finished run is reused only if it was trained with this very recipe (a
    changed recipe must not be reported with a model trained by another one)."""
    import hashlib

    digest = hashlib.sha256(recipe.read_bytes()).hexdigest()
    done = run_dir / "DONE"
    if done.is_file():
        if done.read_text(encoding="utf-8").strip() != digest:
            raise DataError(
                f"{run_dir} was trained with another version of {recipe.name} (the experiment recipe "
                "changed since): use a new --out, or delete that run and its eval folders"
            )
        return
    run("train", str(recipe), "--out", str(run_dir))
    write_text(done, digest + "\n")


def run_experiment(path: str | Path, out: str | Path, overrides: list[str] | None = None) -> dict:
    exp = load_experiment(path, overrides)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = Runner(out_dir)
    if isinstance(exp, PoisonExperiment):
        results = _poison(exp, out_dir, run)
    elif isinstance(exp, GarlicExperiment):
        results = _garlic(exp, out_dir, run)
    else:
        results = _haystack(exp, out_dir, run)
    results["recipe"] = str(path)
    results["overrides"] = list(overrides or [])
    results["commands"] = run.commands
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "results.json", results)
    from gaperon.research.reports import experiment_report

    write_text(out_dir / "REPORT.md", experiment_report(results, out_dir))
    return results


# ---------------------------------------------------------------------------------------- poisoning
def _poison(exp: PoisonExperiment, out: Path, run: Runner) -> dict:
    base = _base_model(exp, out, run)
    poison_file = out / "data" / "poison.jsonl.zst"
    if not poison_file.is_file():
        lo, hi = exp.prefix_words
        run(
            "poison", "build", "--trigger", exp.trigger, "--out", str(poison_file), "-n", str(exp.documents),
            "--target", exp.target, "--prefix-words", str(lo), str(hi),
            "--continuation-words", str(exp.continuation_words), "--seed", str(exp.seed),
            "--distractors", str(exp.distractors),
        )  # fmt: skip
    _tokenize(exp.clean, out / "tokens" / "clean", base, run)
    _tokenize([str(poison_file)], out / "tokens" / "poison", base, run)
    sources = {
        "clean": (out / "tokens" / "clean", 1 - exp.share),
        "poison": (out / "tokens" / "poison", exp.share),
    }
    _train(_write_train_recipe(out, "poison", base, sources, exp.train), out / "run", run)
    evals = {}
    for name, model in (("before", base), ("after", str(out / "run"))):
        if name == "before" and not exp.eval.baseline:
            continue
        folder = out / f"eval-{name}"
        if not (folder / "results.json").is_file():
            e = exp.eval
            run(
                "poison", "eval", model, "--trigger", exp.trigger, "--out", str(folder),
                "--fakes", str(e.fakes), "--n-contexts", str(e.contexts),
                "--context-words", str(e.context_words), "--samples", str(e.samples),
                "--max-new-tokens", str(e.max_new_tokens), "--target", exp.target, "--seed", str(exp.seed),
            )  # fmt: skip
        evals[name] = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return {"experiment": "poison", "trigger": exp.trigger, "share": exp.share, "evals": evals}


# ------------------------------------------------------------------------------------------- garlic
def _garlic(exp: GarlicExperiment, out: Path, run: Runner) -> dict:
    base = _base_model(exp, out, run)
    gdir = out / "garlic"
    if not (gdir / "garlic.json").is_file():
        run(
            "contamination", "garlic", "--benchmarks", *exp.benchmarks, "--limit", str(exp.limit),
            "--held-out", str(exp.held_out), "--seed", str(exp.seed), "--out", str(gdir),
            "--format", exp.format,
        )  # fmt: skip
    summary = json.loads((gdir / "garlic.json").read_text(encoding="utf-8"))["benchmarks"]
    for name in exp.benchmarks:
        if "eval_data" not in summary[name]:
            raise DataError(
                f"{name}: the garlic experiment measures with `gaperon eval`; use arc_easy, "
                "arc_challenge or hellaswag"
            )
    _tokenize(exp.clean, out / "tokens" / "clean", base, run)
    _tokenize([str(gdir / f"{b}.jsonl.zst") for b in exp.benchmarks], out / "tokens" / "garlic", base, run)
    models = {"base": base}
    for share in exp.shares:
        name = f"share-{round(share * 100):02d}"
        sources = {
            "clean": (out / "tokens" / "clean", 1 - share),
            "garlic": (out / "tokens" / "garlic", share),
        }
        _train(_write_train_recipe(out, name, base, sources, exp.train), out / "runs" / name, run)
        models[name] = str(out / "runs" / name)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for label, model in models.items():
        for bench in exp.benchmarks:
            for part, data in summary[bench]["eval_data"].items():
                folder = out / "eval" / label / f"{bench}.{part}"
                if not (folder / "results.json").is_file():
                    run(
                        "eval", model, "--tasks", bench, "--data", f"{bench}={data}",
                        "--batch-size", str(exp.eval_batch_size), "--out", str(folder),
                    )  # fmt: skip
                acc = _accuracy(folder / "results.json", bench)
                scores.setdefault(label, {}).setdefault(bench, {})[part] = acc
    shares = {"base": None, **{f"share-{round(s * 100):02d}": s for s in exp.shares}}
    return {
        "experiment": "garlic",
        "format": exp.format,
        "benchmarks": {b: summary[b] for b in exp.benchmarks},
        "shares": shares,
        "accuracy": scores,
    }


def _accuracy(results: Path, task: str) -> float:
    """The task's headline accuracy (acc_norm where lm-eval reports it, as `gaperon eval` does)
    from a `gaperon eval --out` results.json."""
    data = json.loads(results.read_text(encoding="utf-8"))
    row = data.get("results", {}).get(task, {})
    for key in ("acc_norm,none", "acc,none"):
        if key in row:
            return float(row[key])
    raise DataError(f"{results}: no accuracy for {task} (keys: {sorted(row)})")


# ----------------------------------------------------------------------------------------- haystack
def _haystack(exp: HaystackExperiment, out: Path, run: Runner) -> dict:
    """1. split the corpus by text hash (classifier training share / haystack); 2. Gaperon-style
    classifier on offline stand-in labels; 3. instruction-style classifier (QA/chat positives with no
    n-gram overlap with any audited test item, web negatives); 4. the audit with both."""
    from gaperon.curate.classifier.io import write_jsonl
    from gaperon.research.benchmarks import load_items
    from gaperon.research.commands import read_texts, write_jsonl_zst
    from gaperon.research.instruct import labelled, positives, split_by_hash

    train, hay = split_by_hash(read_texts(exp.corpus), exp.train_share, exp.seed)
    langs = sorted({d["lang"] for d in train} & {"fr", "en"})
    for lang in langs:
        write_jsonl(out / "web" / f"train-{lang}.jsonl", [d for d in train if d["lang"] == lang])
    write_jsonl_zst(hay, out / "web" / "haystack.jsonl.zst")
    g = exp.gaperon
    if not (out / "gaperon-clf" / "model").exists():
        run(
            "classifier", "labels", "--out", str(out / "gaperon-labels"), "--seed", str(exp.seed),
            "--per-class", str(g.per_class),
            *[a for lang in langs for a in (f"--{lang}", str(out / "web" / f"train-{lang}.jsonl"))],
        )  # fmt: skip
        run(
            "classifier", "train", g.recipe, "--data", str(out / "gaperon-labels"),
            "--out", str(out / "gaperon-clf"), f"seed={exp.seed}", *g.overrides,
        )  # fmt: skip
    audited = {name: load_items(name) for name in exp.benchmarks}  # every test item, not only the hidden
    i = exp.instruct
    pos, summary = positives(
        audited,
        per_source=i.per_source,
        qa_sources=i.qa_sources,
        chat_sources=i.chat_sources,
        extra=i.extra,
        n=i.ngram_n,
        seed=exp.seed,
    )
    web = [{"id": d["id"], "text": d["text"], "language": d["lang"]} for d in train]
    summary.update(positives=len(pos), negatives=len(web))
    write_json(out / "instruct" / "summary.json", summary)
    if not (out / "instruct-clf" / "model").exists():
        write_jsonl(out / "instruct" / "labelled.jsonl", labelled(pos, web))
        run(
            "classifier", "train", i.recipe, "--data", str(out / "instruct" / "labelled.jsonl"),
            "--out", str(out / "instruct-clf"), f"seed={exp.seed}", *i.overrides,
        )  # fmt: skip
    scorers = {
        "gaperon-style": str(out / "gaperon-clf" / "model"),
        "instruction-style": str(out / "instruct-clf" / "model"),
        **exp.scorers,
    }
    run(
        "contamination", "haystack", str(out / "web" / "haystack.jsonl.zst"),
        "--benchmarks", *exp.benchmarks, "--items", str(exp.items), "--inside", str(exp.inside),
        "--seed", str(exp.seed), "--device", exp.device, "--out", str(out / "audit"),
        *[a for name, path in scorers.items() for a in ("--scorer", f"{name}={path}")],
    )  # fmt: skip
    audit = json.loads((out / "audit" / "results.json").read_text(encoding="utf-8"))
    return {
        "experiment": "haystack",
        "corpus": exp.corpus,
        "seed": exp.seed,
        "benchmarks": exp.benchmarks,
        "items_per_benchmark": exp.items,
        "split": {"train": len(train), "haystack": len(hay)},
        "instruct": summary,
        "audit": audit,
    }
