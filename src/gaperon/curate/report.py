"""What each step kept and dropped: OUTPUT/report.json, report.md and PNG histograms.

Built from the per-task count files the steps write, so a resumed or multi-machine job reports
the same totals as a single run.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from gaperon.atomic import write_json, write_text
from gaperon.curate.steps import HIST_BINS


def _merge(files: list[str]) -> dict[str, Any]:
    total: dict[str, Any] = {
        "in": 0,
        "kept": 0,
        "dropped": {},
        "languages": {},
        "histograms": {},
        "where": {},
    }
    for f in sorted(files):
        with open(f, encoding="utf-8") as fh:
            c = json.load(fh)
        total["in"] += c["in"]
        total["kept"] += c["kept"]
        for r, n in c["dropped"].items():
            total["dropped"][r] = total["dropped"].get(r, 0) + n
        for lang, d in c["languages"].items():
            t = total["languages"].setdefault(lang, {"in": 0, "kept": 0, "dropped": 0})
            for k in t:
                t[k] += d[k]
        for key, h in c["histograms"].items():
            acc = total["histograms"].setdefault(key, [0] * HIST_BINS)
            total["histograms"][key] = [a + b for a, b in zip(acc, h)]
        for r, locs in c.get("where", {}).items():
            total["where"].setdefault(r, []).extend(locs)
    total["dropped"] = dict(sorted(total["dropped"].items(), key=lambda kv: -kv[1]))
    total["languages"] = dict(sorted(total["languages"].items(), key=lambda kv: -kv[1]["in"]))
    if not total["where"]:
        del total["where"]
    return total


def build_report(out_dir: str) -> dict[str, Any]:
    work = os.path.join(out_dir, "_work")
    with open(os.path.join(work, "plan.json"), encoding="utf-8") as fh:
        plan = json.load(fh)
    steps = []
    for label in plan["labels"]:
        counts = _merge(glob.glob(os.path.join(work, "counts", label, "*.json")))
        extra = os.path.join(work, label, "remove.json")
        if os.path.exists(extra):
            with open(extra, encoding="utf-8") as fh:
                r = json.load(fh)
            counts["minhash"] = {"candidate_pairs": r["candidates"], "verified_pairs": r["verified"]}
        thr = os.path.join(work, label, "thresholds.json")
        if os.path.exists(thr):
            with open(thr, encoding="utf-8") as fh:
                counts["top_k_thresholds"] = json.load(fh)
        steps.append({"step": label, **counts})
    outputs = sorted(glob.glob(os.path.join(out_dir, "output", "*.jsonl.zst")))
    return {"inputs": plan["files"], "outputs": outputs, "steps": steps}


def write_report(out_dir: str) -> dict[str, Any]:
    rep = build_report(out_dir)
    write_json(os.path.join(out_dir, "report.json"), rep)
    plots = _plots(rep, out_dir)
    write_text(os.path.join(out_dir, "report.md"), to_markdown(rep, plots))
    return rep


def to_markdown(rep: dict[str, Any], plots: list[str] | None = None) -> str:
    lines = [
        "# Curation report",
        "",
        f"{len(rep['inputs'])} input file(s) -> {len(rep['outputs'])} output file(s).",
        "",
        "| step | in | kept | dropped | kept % | top reasons |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in rep["steps"]:
        dropped = sum(s["dropped"].values())
        share = 100.0 * s["kept"] / s["in"] if s["in"] else 0.0
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["dropped"].items())[:4])
        lines.append(f"| {s['step']} | {s['in']} | {s['kept']} | {dropped} | {share:.1f} | {reasons} |")
    lines += ["", "## Per language (documents in -> kept)", ""]
    langs = sorted({lg for s in rep["steps"] for lg in s["languages"]})
    lines.append("| step | " + " | ".join(langs) + " |")
    lines.append("|---|" + "---:|" * len(langs))
    for s in rep["steps"]:
        cells = [
            f"{s['languages'][lg]['in']} -> {s['languages'][lg]['kept']}" if lg in s["languages"] else ""
            for lg in langs
        ]
        lines.append(f"| {s['step']} | " + " | ".join(cells) + " |")
    for s in rep["steps"]:
        if s.get("where"):
            lines += ["", f"## Records dropped by {s['step']} (first locations)", ""]
            lines += [f"- {r}: {', '.join(locs[:5])}" for r, locs in s["where"].items()]
    if plots:
        lines += ["", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]]
    return "\n".join(lines) + "\n"


def _plots(rep: dict[str, Any], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    final = rep["steps"][-1] if rep["steps"] else None
    if final and final["histograms"]:
        fig, axes = plt.subplots(1, len(final["histograms"]), figsize=(5 * len(final["histograms"]), 3.5))
        axes = [axes] if len(final["histograms"]) == 1 else list(axes)
        for ax, (key, h) in zip(axes, sorted(final["histograms"].items())):
            ax.bar([(i + 0.5) / HIST_BINS for i in range(HIST_BINS)], h, width=1.0 / HIST_BINS)
            ax.set_title(f"{key} of kept documents")
            ax.set_xlabel(key)
            ax.set_ylabel("documents")
        fig.tight_layout()
        path = os.path.join(out_dir, "scores.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    lid = next((s for s in rep["steps"] if "language_id" in s["step"]), None)
    if lid and final:
        langs = list(lid["languages"])[:12]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = range(len(langs))
        ax.bar(
            [x - 0.2 for x in xs], [lid["languages"][lg]["in"] for lg in langs], width=0.4, label="identified"
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [final["languages"].get(lg, {}).get("kept", 0) for lg in langs],
            width=0.4,
            label="in the output",
        )
        ax.set_xticks(list(xs), langs)
        ax.set_ylabel("documents")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, "languages.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
