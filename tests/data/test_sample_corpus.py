"""The bundled sample corpus (data/samples/) is intact, well formed, bilingual and honestly split.

Also unit-tests the cleaning helpers of scripts/build_sample_corpus.py, which need no Debian package.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples"
MAIN_FILES = {"en": "en.jsonl.zst", "fr": "fr.jsonl.zst", "code": "code.jsonl.zst"}
HELDOUT = "heldout.jsonl.zst"
FIELDS = {"id", "source", "lang", "license", "title", "path", "text"}
SOURCES = {
    "fr": {"libreoffice-help-fr", "manpages-fr", "debian-reference-fr"},
    "en": {"libreoffice-help-en-us", "python3.11-doc", "debian-reference-en"},
    "code": {"cpython-stdlib"},
}
# Deliberately not the build script's word lists: the check must not just mirror the build filter.
FR_MARKERS = frozenset("les des est une dans pour sur avec qui pas vous sont cette aux".split())
EN_MARKERS = frozenset("the and is of to with for that are this from be you".split())


def _load(name: str) -> list[dict]:
    raw = zstandard.ZstdDecompressor().decompress((SAMPLES / name).read_bytes())
    docs = []
    for n, line in enumerate(raw.decode("utf-8").split("\n")[:-1], 1):
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError as e:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{name}:{n}: not JSON: {e}")
    assert raw.endswith(b"\n"), f"{name}: last line not terminated"
    return docs


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[dict]]:
    return {name: _load(name) for name in [*MAIN_FILES.values(), HELDOUT]}


def _marker_shares(text: str) -> tuple[float, float]:
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", text)]
    if not words:
        return 0.0, 0.0
    return (
        sum(w in FR_MARKERS for w in words) / len(words),
        sum(w in EN_MARKERS for w in words) / len(words),
    )


def test_checksums_match_sha256sums() -> None:
    listed = {}
    for line in (SAMPLES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == {*MAIN_FILES.values(), HELDOUT}
    for name, digest in listed.items():
        assert hashlib.sha256((SAMPLES / name).read_bytes()).hexdigest() == digest, name


def test_sizes_within_budget() -> None:
    sizes = {name: (SAMPLES / name).stat().st_size for name in [*MAIN_FILES.values(), HELDOUT]}
    total = sum(sizes.values())
    assert 3_000_000 <= total <= 8_000_000, sizes
    assert 50_000 <= sizes[HELDOUT] <= 600_000, sizes


def test_every_record_is_complete(corpus: dict[str, list[dict]]) -> None:
    ids: Counter[str] = Counter()
    for name, docs in corpus.items():
        assert docs, f"{name} is empty"
        for d in docs:
            assert set(d) == FIELDS, (name, d.get("id"))
            assert all(isinstance(d[k], str) for k in FIELDS), d["id"]
            assert d["id"] == f"{d['source']}:{d['path']}"
            assert d["license"] and d["path"]
            assert len(d["text"]) >= 200, d["id"]
            assert d["source"] in SOURCES[d["lang"]], d["id"]
            if d["lang"] != "code":
                assert unicodedata.is_normalized("NFC", d["text"]), d["id"]
                assert "\r" not in d["text"] and "\x08" not in d["text"], d["id"]
            ids[d["id"]] += 1
        if name != HELDOUT:
            lang = next(k for k, v in MAIN_FILES.items() if v == name)
            assert {d["lang"] for d in docs} == {lang}
            keys = [(d["source"], d["path"]) for d in docs]
            assert keys == sorted(keys), f"{name}: not in deterministic (source, path) order"
    assert max(ids.values()) == 1, [k for k, v in ids.items() if v > 1][:5]


def test_every_source_contributes(corpus: dict[str, list[dict]]) -> None:
    for lang, name in MAIN_FILES.items():
        assert {d["source"] for d in corpus[name]} == SOURCES[lang]


def test_language_shares_follow_spec(corpus: dict[str, list[dict]]) -> None:
    chars = {lang: sum(len(d["text"]) for d in corpus[name]) for lang, name in MAIN_FILES.items()}
    total = sum(chars.values())
    shares = {k: v / total for k, v in chars.items()}
    assert 0.45 <= shares["en"] <= 0.65, shares
    assert 0.25 <= shares["fr"] <= 0.45, shares
    assert 0.05 <= shares["code"] <= 0.20, shares
    assert total >= 15_000_000, chars


def test_heldout_is_disjoint_and_mixed(corpus: dict[str, list[dict]]) -> None:
    held = corpus[HELDOUT]
    main = [d for name in MAIN_FILES.values() for d in corpus[name]]
    assert {d["lang"] for d in held} == {"en", "fr", "code"}
    assert not {d["id"] for d in held} & {d["id"] for d in main}
    digest = lambda d: hashlib.sha256(d["text"].encode()).digest()  # noqa: E731
    assert not {digest(d) for d in held} & {digest(d) for d in main}, "same text in heldout and main"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_prose_is_in_its_language(corpus: dict[str, list[dict]], lang: str) -> None:
    docs = [d for name in (MAIN_FILES[lang], HELDOUT) for d in corpus[name] if d["lang"] == lang]
    own, other = (0, 1) if lang == "fr" else (1, 0)
    good = 0
    for d in docs:
        shares = _marker_shares(d["text"])
        good += shares[own] > shares[other]
    assert good / len(docs) >= 0.97, f"{lang}: only {good}/{len(docs)} documents look {lang}"
    whole = _marker_shares(" ".join(d["text"] for d in docs[::5]))
    assert whole[own] >= 0.08 and whole[other] <= 0.3 * whole[own], whole


def test_french_has_accents_and_english_mostly_ascii(corpus: dict[str, list[dict]]) -> None:
    fr = "".join(d["text"] for d in corpus[MAIN_FILES["fr"]][::7])
    en = "".join(d["text"] for d in corpus[MAIN_FILES["en"]][::7])
    accents = lambda s: sum(c in "éèêàùçôîâœ" for c in s.lower()) / len(s)  # noqa: E731
    assert accents(fr) > 0.01 > accents(en) * 10


def test_code_is_real_python(corpus: dict[str, list[dict]]) -> None:
    for d in corpus[MAIN_FILES["code"]] + [d for d in corpus[HELDOUT] if d["lang"] == "code"]:
        assert d["path"].endswith(".py") and "/test" not in d["path"], d["id"]
        ast.parse(d["text"], filename=d["path"])


def test_provenance_documents_every_source_and_the_rebuild() -> None:
    text = (SAMPLES / "PROVENANCE.md").read_text()
    assert "python scripts/build_sample_corpus.py --out data/samples" in text
    assert "apt-get install" in text and "mandoc" in text
    for sources in SOURCES.values():
        for src in sources:
            assert f"### {src}" in text, src
    for license_id in ("MPL-2.0", "GPL-3.0-or-later", "GPL-2.0-or-later", "PSF-2.0"):
        assert license_id in text


# ---------------------------------------------------------------------------------------------
# the build script's cleaning helpers (no Debian packages needed)


@pytest.fixture(scope="module")
def build():
    path = ROOT / "scripts" / "build_sample_corpus.py"
    spec = importlib.util.spec_from_file_location("build_sample_corpus", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def test_clean_prose_normalises(build) -> None:
    raw = "Cafe\u0301  \r\n\r\n\r\n\r\nfin\x07\t!  "
    assert build.clean_prose(raw) == "Caf\u00e9\n\nfin    !"


def test_reflow_joins_prose_but_keeps_layout(build) -> None:
    prose = "\n".join(["a" * 50 + " word", "b" * 50 + " more", "end."])
    console = "foo login: penguin\nPassword:"
    table = "name" + " " * 6 + "value\n" + "x" * 50 + "    y"
    code = "    for x in a; do\n    echo $x; done"
    out = build.reflow("\n\n".join([prose, console, table, code]), 0, 45).split("\n\n")
    assert out[0] == "a" * 50 + " word " + "b" * 50 + " more end."
    assert out[1:] == [console, table, code]
    heading = "DESCRIPTION\n       " + "w " * 40 + "\n       tail"
    assert build.reflow(heading, 7, 60) == "DESCRIPTION\n       " + "w " * 39 + "w tail"


def test_help_page_parser_keeps_content_and_code(build) -> None:
    page = """<html><head><title>T</title><script>var x=1;</script></head><body>
    <header>Aide LibreOffice</header><aside>index</aside>
    <div id="DisplayArea"><h1>Titre</h1><p>Un   paragraphe
    sur deux lignes.</p><ul><li><p>point</p></li></ul>
    <pre><code>Sub A
    x = 1
End Sub</code></pre><table><tr><td>a</td><td>b</td></tr></table>
    <div class="relatedtopics"><p>Rubriques connexes</p></div></div>
    <div id="SearchFrame"></div><footer><div id="DEBUG">debug</div></footer></body></html>"""
    p = build.HelpPageParser()
    p.feed(page)
    p.close()
    assert p.title == "T"
    assert (
        p.text() == "Titre\n\nUn paragraphe sur deux lignes.\n\n- point\n\nSub A\n    x = 1\nEnd Sub\n\na | b"
    )


def test_rst_to_text_drops_sphinx_machinery(build) -> None:
    rst = """.. _label:

Title
=====

.. index:: single: foo

.. function:: open(file, mode='r')
   :noindex:

   Open *file*; see :func:`~os.path.join` and :ref:`the guide <guide>`, :pep:`8`.

   .. versionadded:: 3.2

.. code-block:: python

   print(1)
"""
    out = build.rst_to_text(rst)
    assert "index" not in out and "_label" not in out and ":noindex:" not in out
    assert "open(file, mode='r')" in out
    assert "see `os.path.join` and the guide, PEP 8." in out
    assert "New in version 3.2." in out and "   print(1)" in out
    assert build.rst_title(rst) == "Title"


def test_missing_package_names_the_apt_package(build, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="apt-get install -y --no-install-recommends manpages-fr"):
        build.require(tmp_path / "absent", "manpages-fr")


def test_budget_parsing(build) -> None:
    assert build.parse_budget(["fr=1e6"], {"en": 1, "fr": 2, "code": 3}, "--max-bytes")["fr"] == 1_000_000
    with pytest.raises(SystemExit, match="LANG=BYTES"):
        build.parse_budget(["de=5"], {"en": 1, "fr": 2, "code": 3}, "--max-bytes")
