"""Benchmark in a haystack: hide benchmark items among web-like documents, let quality scorers rank
everything, and measure where the items land (their percentiles, their share of each top cut and
the enrichment factor over the base rate). A classifier that rewards instruction-like text pushes
the items up; one trained on general quality should not."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

CUTS = (1, 5, 10)


def format_item(item: dict) -> str:
    """The formats of the haystack study: `Subject/Question/A-D/Answer`, `Math Problem/Solution`."""
    if item["benchmark"] == "gsm8k" or not item["choices"]:
        return f"Math Problem: {item['question']}\nSolution: {item['answer']}"
    letters = "ABCDEFGHIJ"
    subject = item.get("subject") or item["benchmark"].replace("_", " ")
    options = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(item["choices"]))
    return f"Subject: {subject}\nQuestion: {item['question']}\n{options}\nAnswer: {letters[item['gold']]}"


def build_haystack(
    corpus: Sequence[dict], items: Sequence[dict], *, inside: float = 0.0, seed: int = 0
) -> list[dict]:
    """Corpus documents plus one document per item: standalone, or (with probability `inside`)
    inserted at a paragraph break of a random corpus document. Items are marked `needle`."""
    rng = random.Random(seed)
    docs = [{"id": str(d.get("id", i)), "text": d["text"], "needle": None} for i, d in enumerate(corpus)]
    for item in items:
        text = format_item(item)
        if inside > 0 and docs and rng.random() < inside:
            host = corpus[rng.randrange(len(corpus))]["text"]
            parts = host.split("\n\n")
            at = rng.randrange(len(parts) + 1)
            text = "\n\n".join(parts[:at] + [text] + parts[at:])
        docs.append({"id": f"needle:{item['id']}", "text": text, "needle": item["id"]})
    return docs


def percentiles(scores: np.ndarray) -> np.ndarray:
    """Each document's percentile in (0, 100]: 100 * (documents scoring strictly lower + 1) / N.
    Tied documents share the lowest rank of their tie, so a tie never lifts a needle into a cut."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.sort(scores)
    return 100.0 * (np.searchsorted(order, scores, side="left") + 1) / len(scores)


def audit(docs: Sequence[dict], scores: np.ndarray, cuts: Sequence[int] = CUTS) -> dict:
    """Where the needles land: per-item percentiles, share of needles in each top-k% cut, the
    enrichment factor (that share over k%, the share a random ranking gives) and its ceiling (every
    needle ranked above every other document)."""
    pct = percentiles(scores)
    needle = np.array([d["needle"] is not None for d in docs])
    n_needles = int(needle.sum())
    out: dict = {
        "documents": len(docs),
        "needles": n_needles,
        "items": {d["needle"]: float(p) for d, p in zip(docs, pct) if d["needle"] is not None},
        "cuts": {},
    }
    distinct = percentiles(np.arange(len(docs), dtype=np.float64))  # a ranking without ties
    for k in cuts:
        in_top = pct > 100.0 - k
        share = float((in_top & needle).sum() / n_needles) if n_needles else 0.0
        # the most a ranking can give: a top k% smaller than the needle count cannot hold them all
        best = min(1.0, float((distinct > 100.0 - k).sum()) / n_needles) if n_needles else 0.0
        out["cuts"][str(k)] = {
            "share_in_top": share,
            "enrichment": share / (k / 100.0),
            "max_enrichment": best / (k / 100.0),
        }
    out["median_percentile"] = float(np.median(pct[needle])) if n_needles else None
    return out


def run_audit(
    docs: Sequence[dict], scorers: dict[str, Callable[[list[str]], np.ndarray]], cuts: Sequence[int] = CUTS
) -> dict:
    """Every scorer ranks every document; {scorer: audit}."""
    texts = [d["text"] for d in docs]
    return {name: audit(docs, np.asarray(fn(texts)), cuts) for name, fn in scorers.items()}


def write_report(results: dict, out_dir, title: str = "Benchmark in a haystack") -> None:
    """results.json, report.md (a table per scorer) and percentiles.png (needles' percentiles)."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gaperon.atomic import write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    lines = [f"# {title}", ""]
    any_res = next(iter(results.values()), None)
    if any_res:
        lines.append(f"{any_res['needles']} benchmark items among {any_res['documents']} documents.")
        lines.append("")
    cuts = list(any_res["cuts"]) if any_res else []
    lines.append(
        "| scorer | median percentile | "
        + " | ".join(f"share in top {k}% | enrichment @{k}%" for k in cuts)
        + " |"
    )
    lines.append("|---|---|" + "---|---|" * len(cuts))
    for name, r in results.items():
        cells = " | ".join(
            f"{r['cuts'][k]['share_in_top']:.1%} | {r['cuts'][k]['enrichment']:.1f}x" for k in cuts
        )
        lines.append(f"| {name} | {r['median_percentile']:.1f} | {cells} |")
    if any_res:
        best = {k: any_res["cuts"][k]["max_enrichment"] for k in cuts}
        cells = " | ".join(f"{best[k] * int(k) / 100:.1%} | {best[k]:.1f}x" for k in cuts)
        lines.append(f"| (ceiling: every item ranked first) | - | {cells} |")
    lines.append("")
    lines.append("![needle percentiles](percentiles.png)")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 3 + 0.4 * len(results)))
    for row, r in enumerate(results.values()):
        values = list(r["items"].values())
        ax.scatter(values, [row] * len(values), alpha=0.6, s=18)
    ax.set_yticks(range(len(results)), list(results))
    for k in cuts:
        ax.axvline(100 - int(k), color="grey", lw=0.8, ls="--")
    ax.set_xlabel("percentile of each benchmark item among all documents (100 = best score)")
    ax.set_xlim(0, 100.5)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "percentiles.png", dpi=110)
    plt.close(fig)
