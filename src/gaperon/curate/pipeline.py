"""A curation recipe -> datatrove pipelines run by datatrove's local, Slurm or Ray executors.

The recipe's steps run in order in one datatrove pipeline per task until a two-pass step (MinHash
dedup, top-k selection) needs the whole input: there the pipeline ends with its collect pass and an
intermediate writer, a one-task pipeline reduces, and the next pipeline reads the intermediate files
back and applies the decision. Each pipeline is one datatrove executor depending on the previous
one, with its own logging folder, so a rerun skips completed tasks (datatrove's completions).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gaperon.config import apply_overrides, from_dict, load_yaml, to_dict
from gaperon.errors import ConfigError


@dataclass
class ExtractConfig:
    """Trafilatura's settings for HTML inputs (datatrove's extractor)."""

    favour_precision: bool = True
    timeout: float = 5.0  # seconds per document; a document past it is dropped as extraction_timeout

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    id_field: str = "id"
    # auto: .warc[.gz] files are web pages (HTML extracted), jsonl/parquet records are text;
    # text: jsonl/parquet only; html: jsonl/parquet records whose text field is HTML (and WARC files);
    # warc: WARC files only.
    format: Literal["auto", "text", "html", "warc"] = "auto"
    extract: ExtractConfig = field(default_factory=ExtractConfig)


@dataclass
class ExecutorConfig:
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = 1
    workers: int = -1  # local: processes at once (-1: min(tasks, cores))
    # slurm (and ray: cpus_per_task, mem_per_cpu_gb)
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0  # slurm and ray
    venv_path: str | None = None
    sbatch_args: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {self.tasks}")


@dataclass
class CurateRecipe:
    steps: list[Any]
    inputs: InputConfig = field(default_factory=InputConfig)
    output: str = ""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    name: str = "curate"
    description: str = ""


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
) -> CurateRecipe:
    data = apply_overrides(load_yaml(path), overrides or [])
    recipe = from_dict(CurateRecipe, data, str(path))
    if inputs:
        recipe.inputs.paths = list(inputs)
    if output:
        recipe.output = output
    if not recipe.inputs.paths:
        raise ConfigError(f"{path}: inputs.paths is empty (give --input PATH)")
    if not recipe.output:
        raise ConfigError(f"{path}: output is empty (give --output DIR)")
    if not isinstance(recipe.steps, list):
        raise ConfigError(f"{path}: steps must be a list")
    return recipe


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int


@dataclass
class Plan:
    stages: list[Stage]
    labels: list[str]  # step labels in order, as folders under _work/counts
    work: str
    files: list[str]


def plan(recipe: CurateRecipe, progress: bool = False) -> Plan:
    """Build every step (errors name the recipe field) and cut the pipeline at two-pass steps."""
    from gaperon.curate.io import InputReader, ShardReader, ShardWriter, expand_inputs
    from gaperon.curate.steps import build_step

    out = os.path.abspath(recipe.output)
    work = os.path.join(out, "_work")
    files = [os.path.abspath(f) for f in expand_inputs(recipe.inputs.paths)]
    tasks = recipe.executor.tasks
    counts = os.path.join(work, "counts")

    def counted(step: Any, label: str) -> Any:
        step.counts_dir = os.path.join(counts, label)
        labels.append(label)
        return step

    labels: list[str] = []
    stages: list[Stage] = []
    inp = recipe.inputs
    web = _check_formats(files, inp.format)
    reader = InputReader(files, inp.text_field, inp.id_field, progress=progress, html=inp.format == "html")
    current: list = [counted(reader, "00_read")]
    if web or inp.format == "html":
        from gaperon.curate.web import ExtractStep

        ex = inp.extract
        extract = ExtractStep(files, timeout=ex.timeout, favour_precision=ex.favour_precision)
        current.append(counted(extract, "00_extract"))
    for i, spec in enumerate(recipe.steps):
        step = build_step(spec, f"steps[{i}]")
        label = f"{i + 1:02d}_{spec['type']}"
        if getattr(step, "two_pass", False):
            collect, reduce, apply = step.passes()
            for s in (collect, reduce, apply):
                s.work_dir = os.path.join(work, label)
                s.tasks = tasks  # how many collect outputs the reduce must find
            seg = os.path.join(work, f"docs_{label}")
            current += [collect, ShardWriter(seg)]
            stages.append(Stage(f"{label} (pass 1)", current, tasks))
            stages.append(Stage(f"{label} (reduce)", [reduce], 1))
            current = [ShardReader(seg, len(files)), counted(apply, label)]
        else:
            current.append(counted(step, label))
    stems = [Path(f).name.split(".")[0] for f in files]
    current.append(
        counted(
            ShardWriter(os.path.join(out, "output"), final=True, stems=stems),
            f"{len(recipe.steps) + 1:02d}_write",
        )
    )
    stages.append(Stage("final", current, tasks))
    return Plan(stages, labels, work, files)


def _check_formats(files: list[str], fmt: str) -> bool:
    """Whether any input is a WARC file; a file that the recipe's `inputs.format` excludes is an error."""
    from gaperon.curate.web import is_warc

    warc = [f for f in files if is_warc(f)]
    if fmt == "warc" and len(warc) < len(files):
        bad = next(f for f in files if not is_warc(f))
        raise ConfigError(f"{bad}: inputs.format is warc but this is no .warc[.gz] file")
    if fmt == "text" and warc:
        raise ConfigError(f"{warc[0]}: inputs.format is text but this is a WARC file (use auto or warc)")
    return bool(warc)


def _check_same_job(recipe: CurateRecipe, work: str) -> None:
    """A rerun resumes the same job; a different recipe in the same folder would mix two jobs."""
    path = os.path.join(work, "recipe.json")
    now = json.dumps(to_dict(_without_executor(recipe)), sort_keys=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            before = fh.read()
        if before != now:
            raise ConfigError(
                f"{os.path.dirname(work)}: holds a job run with a different recipe ({path}); "
                "use another --output or delete it"
            )
        return
    os.makedirs(work, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(now)
    os.replace(path + ".tmp", path)


def _without_executor(recipe: CurateRecipe) -> dict:
    d = to_dict(recipe)
    d["executor"] = {"tasks": recipe.executor.tasks}  # the sharding matters; where it runs does not
    d["inputs"]["paths"] = [os.path.abspath(p) for p in recipe.inputs.paths]
    return d


def executors(p: Plan, cfg: ExecutorConfig, job_name: str) -> list:
    """One datatrove executor per stage, each depending on the one before."""
    out: list = []
    for k, st in enumerate(p.stages):
        logs = os.path.join(p.work, "logs", f"stage{k:02d}")
        prev = out[-1] if out else None
        if cfg.kind == "local":
            from datatrove.executor import LocalPipelineExecutor

            workers = cfg.workers if cfg.workers > 0 else min(st.tasks, os.cpu_count() or 1)
            ex = LocalPipelineExecutor(
                pipeline=st.pipeline,
                tasks=st.tasks,
                workers=min(workers, st.tasks),
                logging_dir=logs,
                depends=prev,
            )
        elif cfg.kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            ex = SlurmPipelineExecutor(
                pipeline=st.pipeline,
                tasks=st.tasks,
                time=cfg.time,
                partition=cfg.partition or "",
                logging_dir=logs,
                depends=prev,
                job_name=f"{job_name}-{k}",
                cpus_per_task=cfg.cpus_per_task,
                mem_per_cpu_gb=cfg.mem_per_cpu_gb,
                venv_path=cfg.venv_path,
                sbatch_args=dict(cfg.sbatch_args),
            )
        else:
            from datatrove.executor import RayPipelineExecutor

            ex = RayPipelineExecutor(
                pipeline=st.pipeline,
                tasks=st.tasks,
                workers=cfg.workers,
                logging_dir=logs,
                depends=prev,
                cpus_per_task=cfg.cpus_per_task,
                mem_per_cpu_gb=cfg.mem_per_cpu_gb,
            )
        out.append(ex)
    return out


def run_recipe(recipe: CurateRecipe, progress: bool = True) -> dict:
    """Run (or resume) the job; return the report (also written to OUTPUT/report.{json,md})."""
    from gaperon.curate.report import write_report

    p = plan(recipe, progress=progress and recipe.executor.kind == "local")
    _check_same_job(recipe, p.work)
    with open(os.path.join(p.work, "plan.json"), "w", encoding="utf-8") as fh:
        json.dump({"labels": p.labels, "files": p.files, "stages": [s.name for s in p.stages]}, fh)
    chain = executors(p, recipe.executor, recipe.name)
    if recipe.executor.kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init()  # the cluster named by RAY_ADDRESS, else a local instance
    chain[-1].run()
    if recipe.executor.kind == "slurm":
        return {"submitted": True, "logs": os.path.join(p.work, "logs")}
    return write_report(os.path.abspath(recipe.output))
