"""Results people look at: lm-eval's results JSON, a Markdown table and a PNG bar chart, with the
Gaperon-8B-SFT card numbers beside the tasks they match; and a comparison of result folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gaperon.atomic import write_text
from gaperon.errors import DataError

# Gaperon-8B-SFT card (accuracy, %), by lm-eval task name.
CARD = {
    "arc_easy": 81.99,
    "arc_challenge": 66.13,
    "hellaswag": 75.75,
    "ifeval": 54.16,
    "ifbench": None,
    "commonsense_qa": 71.58,
    "belebele_eng_Latn": 74.67,
    "mmlu": 52.39,
    "french_bench_arc_challenge": 63.22,
    "french_bench_hellaswag": 68.73,
    "belebele_fra_Latn": 72.78,
    "humaneval": 35.37,
}
METRICS = ("acc_norm,none", "acc,none", "pass@1,create_test", "pass@1,none", "prompt_level_strict_acc,none")


def headline(task_result: dict[str, Any]) -> tuple[str, float] | None:
    """The one number a table shows for a task: acc_norm when present (as the card reports), else acc."""
    for m in METRICS:
        v = task_result.get(m)
        if isinstance(v, (int, float)):
            return m.split(",")[0], float(v)
    return None


def rows(results: dict[str, Any]) -> list[tuple[str, str, float, float | None]]:
    out = []
    for task, res in results.get("results", {}).items():
        h = headline(res)
        if h is not None:
            out.append((task, h[0], 100 * h[1], CARD.get(task)))
    return out


def markdown(results: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| task | metric | score (%) | Gaperon-8B-SFT card (%) |", "|---|---|---|---|"]
    for task, metric, score, card in rows(results):
        lines.append(f"| {task} | {metric} | {score:.2f} | {'' if card is None else f'{card:.2f}'} |")
    n = results.get("config", {}).get("limit")
    if n:
        lines += ["", f"Limited to {n} items per task: not comparable with full-set numbers."]
    return "\n".join(lines) + "\n"


def bar_chart(series: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Grouped bars: one group per task, one bar per series (model or card)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for s in series.values() for t in s})
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4))
    for i, (name, scores) in enumerate(series.items()):
        xs = [j + i * width for j, t in enumerate(tasks) if t in scores]
        ax.bar(xs, [scores[t] for t in tasks if t in scores], width, label=name)
    ax.set_xticks(
        [j + width * (len(series) - 1) / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right"
    )
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_report(results: dict[str, Any], out: Path, title: str) -> None:
    from lm_eval.utils import handle_non_serializable

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    write_text(out / "results.md", markdown(results, title))
    ours = {task: score for task, _, score, _ in rows(results)}
    card = {task: c for task, _, _, c in rows(results) if c is not None}
    bar_chart({title: ours, **({"Gaperon-8B-SFT card": card} if card else {})}, out / "results.png", title)


def load_results(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    if not path.is_file():
        raise DataError(f"{folder}: no results.json (run `gaperon eval ... --out {folder}` first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def compare(folders: list[Path], out: Path | None = None) -> str:
    """Markdown table of several result folders side by side (+ PNG when `out` is given)."""
    series: dict[str, dict[str, float]] = {}
    for folder in folders:
        series[str(folder)] = {task: score for task, _, score, _ in rows(load_results(folder))}
    tasks = sorted({t for s in series.values() for t in s})
    head = "| task | " + " | ".join(series) + " | card |"
    lines = [head, "|---" * (len(series) + 2) + "|"]
    for t in tasks:
        cells = [f"{s[t]:.2f}" if t in s else "" for s in series.values()]
        card = CARD.get(t)
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {'' if card is None else f'{card:.2f}'} |")
    table = "\n".join(lines) + "\n"
    if out is not None:
        write_text(out / "compare.md", table)
        bar_chart(series, out / "compare.png", "comparison")
    return table
