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

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"


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
    clean: list[str] = field(default_factory=lambda: [str(SAMPLES / "en.jsonl.zst")])
    train: TrainSettings = field(default_factory=TrainSettings)
    eval_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.shares or any(not 0 <= s < 1 for s in self.shares):
            raise ValueError(f"shares must be in [0, 1), got {self.shares}")


Experiment = PoisonExperiment | GarlicExperiment


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    data = apply_overrides(load_yaml(path), overrides or [])
    kind = data.get("experiment")
    classes: dict[str, Any] = {"poison": PoisonExperiment, "garlic": GarlicExperiment}
    if kind not in classes:
        raise ConfigError(f"{path}: experiment: expected one of {sorted(classes)}, got {kind!r}")
    base = Path(path).resolve().parent
    exp = from_dict(classes[kind], data, where=str(path))
    exp.model = _resolve(exp.model, base)
    exp.clean = [_resolve(c, base) for c in exp.clean]
    return exp


def _resolve(spec: str, base: Path) -> str:
    """`pkg:MODULE/FILE` is a file shipped by an installed package (offline weights); a relative path
    is relative to the recipe, or to the working directory when it exists there."""
    import importlib.util

    if spec.startswith("pkg:"):
        module, _, rel = spec.removeprefix("pkg:").partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise DataError(f"{spec}: package {module!r} is not installed")
        return str(Path(next(iter(found.submodule_search_locations))) / rel)
    p = Path(spec)
    return str(p if p.is_absolute() or p.exists() else base / p)


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


def _base_model(exp: Experiment, out: Path, run: Runner) -> str:
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
    """Train, or resume; a run whose final checkpoint exists is left as it is."""
    if (run_dir / "DONE").is_file():
        return
    run("train", str(recipe), "--out", str(run_dir))
    write_text(run_dir / "DONE", "finished\n")


def run_experiment(path: str | Path, out: str | Path, overrides: list[str] | None = None) -> dict:
    exp = load_experiment(path, overrides)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = Runner(out_dir)
    results = _poison(exp, out_dir, run) if isinstance(exp, PoisonExperiment) else _garlic(exp, out_dir, run)
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
