"""`gaperon data stats`: what a token folder holds, per split and language, as a plain table."""

from __future__ import annotations

from pathlib import Path

from gaperon.data.readers import skip_line
from gaperon.data.shards import load_manifest


def _human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def stats_rows(dirs: list[str | Path]) -> list[dict]:
    """One row per (source, split, language) plus a language 'all' row per split."""
    rows = []
    for d in dirs:
        m = load_manifest(d)
        for split, s in m["splits"].items():
            rows.append(
                {
                    "source": m["source"],
                    "split": split,
                    "lang": "all",
                    "documents": s["documents"],
                    "tokens": s["tokens"],
                    "shards": len(s["shards"]),
                }
            )
            for lang, c in s["languages"].items():
                rows.append(
                    {
                        "source": m["source"],
                        "split": split,
                        "lang": lang,
                        "documents": c["documents"],
                        "tokens": c["tokens"],
                        "shards": None,
                    }
                )
    return rows


def format_stats(dirs: list[str | Path]) -> str:
    head = ("source", "split", "lang", "documents", "tokens", "share", "shards")
    table = [head]
    for d in dirs:
        m = load_manifest(d)
        table.append(
            (f"# {d}", f"tokenizer {m['tokenizer']['name']}", m["tokenizer"]["identity"][:12], "", "", "", "")
        )
        rep = m.get("reader", {})
        if rep.get("skipped") or rep.get("truncated"):
            table.append((f"#   {skip_line(rep)}", "", "", "", "", "", ""))
        for r in stats_rows([d]):
            total = m["splits"][r["split"]]["tokens"]
            share = f"{100 * r['tokens'] / total:.1f}%" if total else "-"
            table.append(
                (
                    r["source"],
                    r["split"],
                    r["lang"],
                    f"{r['documents']:,}",
                    _human(r["tokens"]),
                    share,
                    "" if r["shards"] is None else str(r["shards"]),
                )
            )
    widths = [max(len(row[i]) for row in table if not row[0].startswith("#")) for i in range(len(head))]
    lines = []
    for row in table:
        if row[0].startswith("#"):
            lines.append(" ".join(c for c in row if c))
        else:
            lines.append(
                "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            )
    return "\n".join(lines)


def format_phase(path: str | Path, global_batch: int, tokenizer_identity: str | None = None) -> str:
    """A phase's resolved mixture: normalised weights, available tokens, and epochs over the budget."""
    from gaperon.data.mixture import load_phase
    from gaperon.data.sampler import MixtureSampler

    phase = load_phase(path)
    s = MixtureSampler(phase, global_batch, tokenizer_identity)
    final = s.epochs(s.total_steps)
    lines = [
        f"phase {phase.name}: seq_len {phase.seq_len}, {_human(phase.tokens)} tokens = "
        f"{s.total_steps:,} steps "
        f"of {global_batch} sequences, seed {phase.seed}, tokenizer {str(s.identity)[:12]}",
        f"{'source':<28} {'weight':>8} {'train tokens':>13} {'val tokens':>11} {'epochs':>8}",
    ]
    for spec, w, tr, va in zip(phase.sources, phase.weights, s.train, s.val):
        lines.append(
            f"{spec.name:<28} {100 * w:>7.2f}% {_human(tr.tokens if tr else 0):>13} "
            f"{_human(va.tokens if va else 0):>11} {final[spec.name]:>8.2f}"
        )
    return "\n".join(lines)
