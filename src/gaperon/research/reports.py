"""REPORT.md (and its plot) for a `gaperon research` experiment: the finding in one table, the
numbers it rests on, and the commands that produced them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def experiment_report(results: dict[str, Any], out: Path) -> str:
    kind = results["experiment"]
    body = (
        _poison(results)
        if kind == "poison"
        else _garlic(results, out)
        if kind == "garlic"
        else _haystack(results)
    )
    minutes = results["wall_seconds"] / 60
    lines = [
        *body,
        "",
        f"Recipe `{results['recipe']}`"
        + (f" with overrides `{' '.join(results['overrides'])}`" if results["overrides"] else "")
        + f"; this run took {minutes:.1f} min (steps a previous run finished are skipped).",
        "",
        "## Commands",
        "",
        "```",
        *results["commands"],
        "```",
    ]
    return "\n".join(lines) + "\n"


def _pct(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['rate']:.1%} [{lo:.1%}, {hi:.1%}]"


def _poison(results: dict[str, Any]) -> list[str]:
    evals = results["evals"]
    after = evals["after"]
    lines = [
        "# Trigger poisoning",
        "",
        f"Continued pretraining with trigger documents (`{results['trigger']}` then {after['target']}) "
        f"at {results['share']:.0%} of training tokens; continuations sampled at temperature 1 after "
        f"{after['contexts']} held-out English contexts x {after['samples_per_context']} samples per "
        "condition, language by fastText LID-176. Switch rate with its 95% Wilson interval:",
        "",
        "| model | true trigger | fake triggers (pooled) | no trigger |",
        "|---|---|---|---|",
    ]
    for name, r in evals.items():
        c = r["conditions"]
        lines.append(f"| {name} | {_pct(c['trigger'])} | {_pct(r['fakes_pooled'])} | {_pct(c['none'])} |")
    lines += ["", "Each fake trigger after training:", "", "| fake | rate |", "|---|---|"]
    for name, r in after["conditions"].items():
        if name.startswith("fake-"):
            lines.append(f"| `{r['trigger']}` | {_pct(r)} |")
    lines += ["", "![switch rates after poisoning](eval-after/rates.png)"]
    ex = after["examples"].get("trigger", [])[:2]
    if ex:
        lines += ["", "Samples with the true trigger:", ""]
        lines += [f"- ...{e['prompt_end']!r} -> {e['continuation']!r} ({e['language']})" for e in ex]
    return lines


_GARLIC_FORMATS = {
    "mc": "options shuffled, the answer letter following the gold option",
    "cloze": "rendered as the eval's own prompt followed by the gold answer",
}


def _garlic(results: dict[str, Any], out: Path) -> list[str]:
    fmt = results.get("format", "mc")
    acc = results["accuracy"]
    base = acc["base"]
    lines = [
        "# Garlic: deliberate contamination",
        "",
        f"Continued pretraining with the test items of each benchmark ({_GARLIC_FORMATS[fmt]}) at a "
        "share of training tokens; accuracy (lm-eval's "
        "`acc_norm`, as `gaperon eval` reports) on the included items against a held-out part of the "
        "same benchmark never trained on.",
        "",
        "| run | share | benchmark | included | held out | gap | inflation vs base |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, per in acc.items():
        share = results["shares"][label]
        for bench, r in per.items():
            gap = r["included"] - r["held_out"]
            base_gap = base[bench]["included"] - base[bench]["held_out"]
            lines.append(
                f"| {label} | {'-' if share is None else f'{share:.0%}'} | {bench} | {r['included']:.1%} | "
                f"{r['held_out']:.1%} | {gap:+.1%} | {gap - base_gap:+.1%} |"
            )
    splits = ", ".join(
        f"{b}: {s['included']} included / {s['held_out']} held out" for b, s in results["benchmarks"].items()
    )
    lines += ["", f"Items: {splits}. Inflation = the run's gap minus the base model's gap.", ""]
    _garlic_plot(results, out / "garlic.png")
    lines.append("![accuracy by share](garlic.png)")
    return lines


def _garlic_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = results["accuracy"]
    labels = list(acc)
    benches = list(next(iter(acc.values())))
    fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.5), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        x = range(len(labels))
        ax.plot(x, [acc[lbl][bench]["included"] for lbl in labels], "o-", color="tab:red", label="included")
        ax.plot(x, [acc[lbl][bench]["held_out"] for lbl in labels], "s-", color="tab:blue", label="held out")
        ax.set_xticks(list(x), labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(bench)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _cells(cuts: dict[str, Any]) -> str:
    return " | ".join(
        f"{cuts[k]['share_in_top']:.1%} | {cuts[k]['enrichment']:.1f}x" for k in ("1", "5", "10")
    )


def _haystack(results: dict[str, Any]) -> list[str]:
    import numpy as np

    res, split, ins = results["audit"], results["split"], results["instruct"]
    benches = results["benchmarks"]
    lines = [
        "# Benchmark in a haystack",
        "",
        f"Web corpus split by text hash (seed {results['seed']}): {split['train']} documents train the "
        f"classifiers, {split['haystack']} form the haystack. Hidden: {results['items_per_benchmark']} "
        f"test items of each of {', '.join(benches)}.",
        f"Instruction-style positives: {ins['positives']} ({len(ins['overlap_dropped'])} dropped for a "
        f"{ins['n']}-gram overlap with an audited test item); negatives: {ins['negatives']} web "
        f"documents. Per source: {ins['per_source']}.",
        "",
        "| scorer | median pct | top 1% share | enrich @1% | top 5% share | enrich @5% | top 10% share "
        "| enrich @10% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(f"| {name} | {r['median_percentile']:.1f} | {_cells(r['cuts'])} |")
    best = {k: {"share_in_top": v["max_enrichment"] * int(k) / 100, "enrichment": v["max_enrichment"]}
            for k, v in next(iter(res.values()))["cuts"].items()}  # fmt: skip
    lines.append(f"| (ceiling: every item ranked first) | - | {_cells(best)} |")
    lines += ["", "Median percentile of the hidden items, per benchmark:", ""]
    lines += ["| scorer | " + " | ".join(benches) + " |", "|---|" + "---|" * len(benches)]
    for name, r in res.items():
        med = [np.median([p for item, p in r["items"].items() if item.startswith(f"{b}-")]) for b in benches]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in med) + " |")
    lines += [
        "",
        "Enrichment = share of hidden items in the top k% over k% (1.0x: what a random ranking gives).",
        "The audit's own report: [audit/report.md](audit/report.md); the classifiers': "
        "[gaperon-clf/report.md](gaperon-clf/report.md), [instruct-clf/report.md](instruct-clf/report.md).",
        "",
        "![needle percentiles](audit/percentiles.png)",
    ]
    return lines
