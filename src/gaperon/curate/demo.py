"""A noisy web-like slice made from the bundled corpus, for the demo and the tests.

Each generated document records its `noise` kind: boilerplate/navigation, keyword spam, exact and
near duplicates (~5% of words changed), broken encoding (UTF-8 read as Latin-1), other languages,
and fragments. The clean corpus plus this slice shows what each curation step removes.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

NAV = [
    "Accueil | Produits | Contact | Connexion",
    "Home | About us | Shop | Login | Register",
    "Menu",
    "Partager sur Facebook",
    "Share this article",
    "Tous droits réservés © 2024",
    "All rights reserved © 2024",
    "Ce site utilise des cookies. En poursuivant votre navigation, vous acceptez les cookies.",
    "This website uses cookies to improve your experience. Privacy policy.",
]
SPAM_WORDS = ["casino", "gratuit", "bonus", "cheap", "viagra", "crédit", "promo", "free", "win", "bitcoin"]
OTHER_LANGUAGES = {
    "de": "Die Stadtverwaltung hat am Montag beschlossen, die Öffnungszeiten der Bibliothek zu verlängern. "
    "Viele Studierende hatten sich beschwert, dass sie abends keinen ruhigen Ort zum Lernen finden. "
    "Ab nächstem Monat bleibt das Gebäude deshalb bis zweiundzwanzig Uhr geöffnet, auch am Wochenende. "
    "Die zusätzlichen Kosten werden aus dem Kulturhaushalt der Stadt bezahlt.",
    "es": "El ayuntamiento decidió el lunes ampliar el horario de la biblioteca municipal. Muchos "
    "estudiantes se habían quejado de que por la noche no encontraban un lugar tranquilo para estudiar. "
    "A partir del mes que viene el edificio permanecerá abierto hasta las diez de la noche, también los "
    "fines de semana. Los costes adicionales saldrán del presupuesto cultural de la ciudad.",
    "it": "Il consiglio comunale ha deciso lunedì di prolungare l'orario della biblioteca civica. Molti "
    "studenti si erano lamentati di non trovare la sera un posto tranquillo dove studiare. Dal mese "
    "prossimo l'edificio resterà aperto fino alle ventidue, anche nel fine settimana. I costi aggiuntivi "
    "saranno coperti dal bilancio culturale della città.",
}


def near_duplicate(text: str, fraction: float, rng: random.Random) -> str:
    """`text` with about `fraction` of its whitespace-separated words replaced by other words."""
    parts = re.split(r"(\s+)", text)
    idx = [i for i, t in enumerate(parts) if t and not t.isspace()]
    for i in rng.sample(idx, min(len(idx), max(1, round(len(idx) * fraction)))):
        parts[i] = rng.choice(["lorem", "quux", "zorg", "blip", "frob", "wibble", "plugh"]) + str(
            rng.randrange(1000)
        )
    return "".join(parts)


def read_jsonl(path: str | Path, limit: int | None = None) -> Iterator[dict]:
    import zstandard

    with open(path, "rb") as raw:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        for i, line in enumerate(reader):
            if limit is not None and i >= limit:
                break
            yield json.loads(line)


def _noisy(doc: dict, kind: str, rng: random.Random) -> str:
    text = doc["text"]
    if kind == "boilerplate":
        return "\n".join(rng.sample(NAV, 5) + [text[:200]] + rng.sample(NAV, 4))
    if kind == "spam":
        words = [rng.choice(SPAM_WORDS) for _ in range(150)]
        return " ".join(words)
    if kind == "near_duplicate":
        return near_duplicate(text, 0.05, rng)
    if kind == "exact_duplicate":
        return text
    if kind == "broken_encoding":
        return text.encode("utf-8").decode("latin-1")
    if kind == "fragment":
        return " ".join(text.split()[:8])
    raise ValueError(kind)


def noisy_web_slice(
    corpus: list[str | Path], out: str | Path, n: int = 300, seed: int = 0, per_file: int = 400
) -> Path:
    """Write `n` noisy web-like documents made from `corpus` files to `out` (.jsonl.zst)."""
    import zstandard

    rng = random.Random(seed)
    pool = [d for p in corpus for d in read_jsonl(p, per_file) if len(d["text"].split()) >= 80]
    kinds = [
        "boilerplate",
        "spam",
        "near_duplicate",
        "exact_duplicate",
        "broken_encoding",
        "fragment",
        "other",
    ]
    lines = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        doc = rng.choice(pool)
        if kind == "other":
            lang, text = rng.choice(sorted(OTHER_LANGUAGES.items()))
            text = text + "\n\n" + text.replace(".", ";", 1)  # not an exact copy of the other docs
            text = near_duplicate(text, 0.3, rng)
        else:
            lang, text = doc.get("lang", "unknown"), _noisy(doc, kind, rng)
        rec = {"id": f"noisy-{i:05d}", "text": text, "source": "web-noisy", "lang": lang, "noise": kind}
        if kind.endswith("duplicate"):
            rec["copy_of"] = doc["id"]
        lines.append(json.dumps(rec, ensure_ascii=False))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode("utf-8")))
    tmp.replace(out)
    return out


def curate_demo(out: str | Path = "out/demo", tasks: int = 2, progress: bool = False) -> Path:
    """`make demo`'s curation stage: bundled fr/en corpus + a noisy slice through
    recipes/curate/demo.yaml; returns OUT/curated (output/*.jsonl.zst, report.md)."""
    from gaperon.curate.pipeline import load_recipe, run_recipe

    repo = Path(__file__).resolve().parents[3]
    samples = repo / "data" / "samples"
    noisy = noisy_web_slice(
        [samples / "fr.jsonl.zst", samples / "en.jsonl.zst"], Path(out) / "noisy-web.jsonl.zst"
    )
    inputs = [str(samples / "fr.jsonl.zst"), str(samples / "en.jsonl.zst"), str(noisy)]
    recipe = load_recipe(
        repo / "recipes" / "curate" / "demo.yaml",
        [f"executor.tasks={tasks}"],
        inputs=inputs,
        output=str(Path(out) / "curated"),
    )
    run_recipe(recipe, progress=progress)
    return Path(out) / "curated"


def main(argv: list[str] | None = None) -> int:
    """`python -m gaperon.curate.demo [OUT]`: the noisy slice, then the demo curation, into OUT."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    folder = curate_demo(args[0] if args else "out/demo", progress=True)
    print((folder / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
