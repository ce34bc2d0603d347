#!/usr/bin/env python3
"""Build the bundled bilingual sample corpus (data/samples/) from openly licensed Debian packages.

Why this exists: the demo and the tests need real French, English and code text that ships with the
repository and can be rebuilt, byte for byte, from packages anyone can install offline.

Prerequisites (Debian 12 "bookworm"; run once as root):

    apt-get update
    apt-get install -y --no-install-recommends libreoffice-help-fr libreoffice-help-en-us \
        manpages-fr debian-reference-fr debian-reference-en python3.11-doc mandoc \
        libpython3.11-stdlib

Then:

    python scripts/build_sample_corpus.py --out data/samples

Needs only the standard library plus `zstandard`. Output: fr/en/code/heldout `.jsonl.zst` (one JSON
document per line: id, source, lang, license, title, path, text), PROVENANCE.md and SHA256SUMS.
Same packages + same zstandard version => identical files (sorted inputs, hash-ordered selection).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

try:
    import zstandard
except ImportError:  # pragma: no cover - exercised only on a bare interpreter
    sys.exit("build_sample_corpus: the `zstandard` Python package is required (pip install zstandard)")

LANGS = ("en", "fr", "code")
# Default budgets in UTF-8 bytes of document text. English is the scarce side (~15 MB available, all
# of it taken), French and code are sampled down to ~35% and ~10% of the characters.
DEFAULT_MAX_BYTES = {"en": 16_000_000, "fr": 9_800_000, "code": 2_700_000}
DEFAULT_HELDOUT_BYTES = {"en": 450_000, "fr": 300_000, "code": 100_000}
HELDOUT_MAX_DOC_CHARS = 8_000  # held-out docs serve as prompts and LID checks: keep them short
MIN_CHARS = 200
ZSTD_LEVEL = 19

LO_ROOT = Path("/usr/share/libreoffice/help")
MAN_FR_ROOT = Path("/usr/share/man/fr")
DEBREF_ROOT = Path("/usr/share/debian-reference")
PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
STDLIB_PACKAGES = ("libpython3.11-minimal", "libpython3.11-stdlib")


@dataclass(frozen=True)
class Source:
    """One upstream: its Debian package(s), language, licence and what we say about it."""

    name: str
    lang: str
    license: str
    packages: tuple[str, ...]
    upstream: str
    cleaning: str


SOURCES = {
    s.name: s
    for s in (
        Source(
            "libreoffice-help-fr",
            "fr",
            "MPL-2.0",
            ("libreoffice-help-fr",),
            "LibreOffice help (helpcontent2), https://help.libreoffice.org",
            "HTML pages -> text of the `DisplayArea` div only (header, side bars, search/donation "
            "frames, footer debug block, scripts, styles and 'related topics' links dropped); "
            "block elements become paragraphs, list items get '- ', table cells are joined by ' | '.",
        ),
        Source(
            "libreoffice-help-en-us",
            "en",
            "MPL-2.0",
            ("libreoffice-help-en-us",),
            "LibreOffice help (helpcontent2), https://help.libreoffice.org",
            "same HTML cleaning as libreoffice-help-fr.",
        ),
        Source(
            "manpages-fr",
            "fr",
            "GPL-3.0-or-later",
            ("manpages-fr",),
            "manpages-l10n, https://salsa.debian.org/manpages-l10n-team/manpages-l10n "
            "(French translations, GPL-3+; the translated originals keep their own free licences)",
            "roff rendered with `mandoc -T utf8 -O width=100`, backspace overstrikes removed, "
            "running header/footer lines dropped, hard-wrapped body paragraphs joined into one line "
            "(indented blocks, tables and short lines kept as laid out), the 7-space body indent "
            "removed; `.so` redirections and symlinks skipped.",
        ),
        Source(
            "debian-reference-fr",
            "fr",
            "GPL-2.0-or-later",
            ("debian-reference-fr",),
            "Debian Reference by Osamu Aoki, https://www.debian.org/doc/manuals/debian-reference/",
            "the plain-text book split into one document per 'N.M.' section (chapter intros are "
            "their own documents); front matter and tables of contents dropped; 4-space indent "
            "removed; hard-wrapped paragraphs and list items joined (console output and tables kept).",
        ),
        Source(
            "debian-reference-en",
            "en",
            "GPL-2.0-or-later",
            ("debian-reference-en",),
            "Debian Reference by Osamu Aoki, https://www.debian.org/doc/manuals/debian-reference/",
            "same splitting as debian-reference-fr.",
        ),
        Source(
            "python3.11-doc",
            "en",
            "PSF-2.0",
            ("python3.11-doc",),
            "the CPython 3.11 documentation, https://docs.python.org/3.11/",
            "reST sources (`_sources/**/*.rst.txt`, changelog excluded): labels, comments, index/"
            "toctree/highlight/module/author directives and directive options dropped; kept "
            "directives reduced to their argument (e.g. a function signature) or a readable label "
            "('Note:', 'New in version 3.2.'); roles `:func:`x`` -> `x`, links -> their text.",
        ),
        Source(
            "cpython-stdlib",
            "code",
            "PSF-2.0",
            STDLIB_PACKAGES,
            "the CPython 3.11 standard library, https://github.com/python/cpython",
            "non-test `.py` files owned by the packages, kept verbatim (only CRLF -> LF); generated "
            "files (encodings tables, pydoc topics, _sysconfigdata) excluded.",
        ),
    )
}

# ---------------------------------------------------------------------------------------------
# prerequisites and package metadata


class MissingPrerequisite(SystemExit):
    """A package or tool the build reads is not installed: say which apt package provides it."""


def require(path: Path, package: str) -> Path:
    if not path.exists():
        raise MissingPrerequisite(
            f"build_sample_corpus: {path} not found: install it with "
            f"`apt-get install -y --no-install-recommends {package}`"
        )
    return path


def require_tool(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise MissingPrerequisite(
            f"build_sample_corpus: `{tool}` not found: install it with "
            f"`apt-get install -y --no-install-recommends {package}`"
        )
    return found


def dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return "unknown (no dpkg-query)"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


def dpkg_files(package: str) -> list[str]:
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise MissingPrerequisite(
            f"build_sample_corpus: package {package} is not installed: "
            f"`apt-get install -y --no-install-recommends {package}`"
        )
    return out.stdout.splitlines()


# ---------------------------------------------------------------------------------------------
# documents and text normalisation


@dataclass
class Doc:
    source: str
    path: str
    title: str
    text: str
    id: str = ""
    lang: str = field(default="")
    license: str = field(default="")

    def record(self) -> dict[str, str]:
        return {
            "id": self.id,
            "source": self.source,
            "lang": self.lang,
            "license": self.license,
            "title": self.title,
            "path": self.path,
            "text": self.text,
        }


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_prose(text: str) -> str:
    """NFC, LF line ends, no control chars or trailing blanks, at most one empty line in a row."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text).replace("\t", "    ")
    text = _TRAILING_WS.sub("\n", text + "\n")
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def clean_code(text: str) -> str:
    """Code is kept verbatim: only line ends are unified and the file edges trimmed of blank lines."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")


_BULLET = re.compile(r"^\s*([-*+•·o]|\d+[.)]|[a-z][.)])\s")
_ITEM = re.compile(r"^ *([-*+•]|\d+\.) +(?=\S)")


def reflow(text: str, indent: int, min_len: int) -> str:
    """Join hard-wrapped prose paragraphs (renderers wrap at ~70-100 columns; readers do not).

    Within each paragraph, only runs of consecutive lines sitting exactly at `indent` are joined, so
    headings, code examples, tables, option lists and nested blocks keep their layout; every line of
    a run but the last must also fill most of the wrap width (`min_len`), which keeps console output.
    """
    pad = " " * indent

    def at_indent(ln: str) -> bool:
        return ln.startswith(pad) and len(ln) > indent and ln[indent] != " "

    def join(run: list[str]) -> list[str]:
        tabular = any("   " in ln.strip() or "\t" in ln for ln in run)
        listy = any(_BULLET.match(ln) for ln in run[1:])
        short = any(len(ln.strip()) < min_len for ln in run[:-1])
        if len(run) < 2 or tabular or listy or short:
            return run
        joined = run[0].rstrip()
        for ln in run[1:]:
            ln = ln.strip()
            hyphen = joined.endswith("-") and len(joined) > 1 and joined[-2].isalpha() and ln[:1].islower()
            joined = joined + ln if hyphen else f"{joined} {ln}"
        return [joined]

    out = []
    for para in text.split("\n\n"):
        item = _ITEM.match(para)
        if item:  # "  * text" / " 1. text" with continuation lines aligned on the text
            first, *rest = para.split("\n")
            hang = " " * len(item.group(0))
            if rest and all(ln.startswith(hang) and not ln[len(hang) :].startswith(" ") for ln in rest):
                out.append(
                    first[: len(hang)] + " ".join(join([first[len(hang) :]] + [ln.strip() for ln in rest]))
                )
                continue
        lines, run = [], []
        for ln in para.split("\n"):
            if at_indent(ln):
                run.append(ln)
                continue
            lines += join(run) + [ln]
            run = []
        out.append("\n".join(lines + join(run)))
    return "\n\n".join(out)


def dedent(lines: Iterable[str], width: int) -> list[str]:
    """Remove up to `width` leading spaces from each line (the renderer's fixed body indent)."""
    pat = re.compile(f"^ {{1,{width}}}")
    return [pat.sub("", line) for line in lines]


# French/English function words: a cheap, dependency-free check that a page is in its language
# (some LibreOffice/Debian Reference pages are only partly translated).
FR_WORDS = frozenset(
    "le la les un une des du de et est dans pour que qui sur par pas avec ce cette sont vous nous il "
    "elle au aux ou se ne plus peut être son sa ses leur si".split()
)
EN_WORDS = frozenset(
    "the of and to in is that for it with as on be by this are or an from at which not you can if "
    "your will has have".split()
)
_WORD = re.compile(r"[^\W\d_]+")


def stopword_shares(text: str) -> tuple[float, float]:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return 0.0, 0.0
    fr = sum(w in FR_WORDS for w in words) / len(words)
    en = sum(w in EN_WORDS for w in words) / len(words)
    return fr, en


def looks_like(text: str, lang: str) -> bool:
    fr, en = stopword_shares(text)
    if lang == "fr":
        return fr >= 0.04 and fr >= 2 * en
    if lang == "en":
        return en >= 0.04 and en >= 2 * fr
    return True


# ---------------------------------------------------------------------------------------------
# LibreOffice help (HTML)

_BLOCK_TAGS = {
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "tr",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "section",
    "blockquote",
}
_SKIP_TAGS = {
    "script",
    "style",
    "noscript",
    "header",
    "footer",
    "aside",
    "nav",
    "button",
    "input",
    "label",
    "head",
    "title",
    "meta",
}
_SKIP_IDS = {"SearchFrame", "DonationFrame", "DEBUG"}
_SKIP_CLASSES = {"relatedtopics", "noteicon", "tipicon", "warningicon", "debug", "howtoget"}


class HelpPageParser(HTMLParser):
    """Collect readable text of a LibreOffice help page's `DisplayArea`, keeping block structure."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self._in_title = False
        self._stack: list[tuple[str, bool]] = []  # (tag, starts a skipped subtree)
        self._skip_depth = 0
        self._in_display = False
        self._display_depth = -1
        self._parts: list[str] = []
        self._cells_in_row = 0
        self._pre_depth = 0
        self._bullet = False

    # void elements never get an end tag: do not push them
    _VOID = {"br", "img", "meta", "link", "input", "hr", "base", "col", "area", "source", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag in self._VOID:
            if tag == "br" and self._active():
                self._parts.append("\n")
            return
        classes = set((a.get("class") or "").split())
        skip = tag in _SKIP_TAGS or a.get("id") in _SKIP_IDS or bool(classes & _SKIP_CLASSES)
        self._stack.append((tag, skip))
        if skip:
            self._skip_depth += 1
        if a.get("id") == "DisplayArea" and not self._in_display:
            self._in_display = True
            self._display_depth = len(self._stack)
        if not self._active():
            return
        if tag == "pre":
            self._pre_depth += 1
            self._parts.append("\n\n\x02")
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n\n")
        if tag == "tr":
            self._cells_in_row = 0
        if tag in ("td", "th"):
            if self._cells_in_row:
                self._parts.append(" | ")
            self._cells_in_row += 1
        if tag == "li":
            self._bullet = True  # "- " goes before the item's first text, even inside a nested <p>

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._VOID:
            return
        # pop to the matching open tag (help pages are well formed, but be forgiving)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                for _, skip in self._stack[i:]:
                    if skip:
                        self._skip_depth -= 1
                if self._in_display and i + 1 <= self._display_depth:
                    self._in_display = False
                del self._stack[i:]
                break
        else:
            return
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
        if self._active() and tag == "pre":
            self._parts.append("\x03\n\n")
        elif self._active() and tag in _BLOCK_TAGS:
            self._parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._active() and self._bullet and data.strip():
            self._parts.append("- ")
            self._bullet = False
        if self._active():  # outside <pre>, source line breaks are just spaces
            self._parts.append(data if self._pre_depth else re.sub(r"[\r\n]+", " ", data))

    def _active(self) -> bool:
        return self._in_display and self._skip_depth == 0

    def text(self) -> str:
        """Flow text is re-spaced paragraph by paragraph; `<pre>` blocks (code) keep their layout."""
        paras = []
        for i, segment in enumerate(re.split(r"\x02(.*?)\x03", "".join(self._parts), flags=re.S)):
            if i % 2:  # inside <pre>
                code = "\n".join(line.rstrip() for line in segment.split("\n")).strip("\n")
                if code.strip():
                    paras.append(code)
                continue
            for block in re.split(r"\n\s*\n", segment):
                block = re.sub(r"[ \t\r\f\v]+", " ", block.replace("\u00ad", ""))
                block = "\n".join(line.strip() for line in block.split("\n") if line.strip())
                if block and block != "-":
                    paras.append(block)
        return "\n\n".join(paras)


def libreoffice_help(source: Source, lang_dir: str) -> Iterator[Doc]:
    root = require(LO_ROOT / lang_dir / "text", source.packages[0])
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(LO_ROOT / lang_dir).as_posix()
        if rel.endswith("sbasic/guide/access2base.html"):  # third-party page with its own licence
            continue
        parser = HelpPageParser()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        yield Doc(source.name, rel, html.unescape(parser.title).strip(), parser.text())


# ---------------------------------------------------------------------------------------------
# French man pages (roff via mandoc)

_OVERSTRIKE = re.compile(r".\x08")


def render_man(path: Path, mandoc: str) -> str:
    out = subprocess.run(
        [mandoc, "-T", "utf8", "-O", "width=100", str(path)], capture_output=True, check=False
    )
    text = _OVERSTRIKE.sub("", out.stdout.decode("utf-8", errors="replace"))
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    lines = lines[1:-1]  # running header "LS(1)  Commandes ...  LS(1)" and footer
    body = reflow("\n".join(ln.rstrip() for ln in lines), 7, 60)
    return "\n".join(dedent(body.split("\n"), 7))


def manpages_fr(source: Source) -> Iterator[Doc]:
    root = require(MAN_FR_ROOT, source.packages[0])
    mandoc = require_tool("mandoc", "mandoc")
    for path in sorted(root.glob("man*/*")):
        if path.is_symlink() or not path.is_file():
            continue
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        body = [
            ln
            for ln in raw.decode("utf-8", errors="replace").splitlines()
            if ln.strip() and not ln.startswith(('.\\"', "'\\\""))
        ]
        if body and all(ln.startswith(".so ") for ln in body):
            continue  # a redirection to another page
        name = path.name.removesuffix(".gz")
        page, _, section = name.rpartition(".")
        yield Doc(
            source.name,
            path.relative_to(MAN_FR_ROOT).as_posix(),
            f"{page}({section})",
            render_man(path, mandoc),
        )


# ---------------------------------------------------------------------------------------------
# Debian Reference (plain-text book)

_CHAPTER = re.compile(r"^(Chapter|Chapitre|Appendix|Annexe)\s+[0-9A-Z]+\.\s+\S")
_SECTION = re.compile(r"^([0-9]+|[A-Z])\.[0-9]+\.\s+\S")


def debian_reference(source: Source, lang: str) -> Iterator[Doc]:
    path = require(DEBREF_ROOT / f"debian-reference.{lang}.txt.gz", source.packages[0])
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    start = next((i for i, ln in enumerate(lines) if _CHAPTER.match(ln)), None)
    if start is None:
        raise SystemExit(f"build_sample_corpus: {path}: no 'Chapter N.' heading found")
    chunks: list[tuple[str, list[str]]] = []
    for ln in lines[start:]:
        if _CHAPTER.match(ln) or _SECTION.match(ln):
            chunks.append((ln.strip(), [ln]))
        else:
            chunks[-1][1].append(ln)
    rel = path.relative_to("/").as_posix()
    for title, body in chunks:
        words = title.split()  # str.split() also splits on the no-break spaces of the French text
        key = words[0].rstrip(".") if _SECTION.match(title) else f"{words[0].lower()}-{words[1].rstrip('.')}"
        # some wrapped lines are indented with no-break spaces: make them plain before dedenting
        body = [re.sub(r"^[ \u00a0]+", lambda m: " " * len(m.group()), ln).rstrip() for ln in body]
        text = reflow("\n".join(dedent(body, 4)), 0, 45)
        yield Doc(source.name, f"{rel}#{key}", " ".join(words), text)


# ---------------------------------------------------------------------------------------------
# Python documentation (reST)

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_COMMENT_OR_TARGET = re.compile(r"^(\s*)\.\.(\s|$)")
_OPTION = re.compile(r"^\s+:[\w -]+:(\s.*)?$")
_DROP_DIRECTIVES = {
    "index",
    "toctree",
    "highlight",
    "module",
    "moduleauthor",
    "sectionauthor",
    "currentmodule",
    "include",
    "literalinclude",
    "tabularcolumns",
    "testsetup",
    "testcleanup",
    "only",
    "raw",
    "image",
    "figure",
    "audit-event",
    "availability",
    "program",
    "productionlist",
    "impl-detail",
    "c:namespace-push",
    "c:namespace-pop",
    "default-role",
    "role",
}
_LABELS = {
    "note": "Note:",
    "warning": "Warning:",
    "seealso": "See also:",
    "attention": "Attention:",
    "tip": "Tip:",
    "important": "Important:",
    "caution": "Caution:",
    "hint": "Hint:",
    "danger": "Danger:",
}
_VERSION_LABELS = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:",
    "deprecated-removed": "Deprecated since version {0}, removed in version {1}:",
}
_ROLE_WITH_TARGET = re.compile(r":(?:[\w-]+:)?[\w-]+:`([^`<]*?)\s*<[^`>]*>`")
_ROLE = re.compile(r":(?:[\w-]+:)?([\w-]+):`[~!.]*([^`]*)`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")
_REF = re.compile(r"`([^`]+)`_\b")


def _role(m: re.Match[str]) -> str:
    kind, text = m.group(1), m.group(2)
    if kind == "pep":
        return f"PEP {text}"
    if kind == "rfc":
        return f"RFC {text}"
    return (
        f"`{text}`"
        if kind
        not in (
            "ref",
            "doc",
            "term",
            "dfn",
            "abbr",
            "emphasis",
            "strong",
            "guilabel",
            "menuselection",
            "source",
        )
        else text
    )


def rst_inline(line: str) -> str:
    line = _ROLE_WITH_TARGET.sub(lambda m: re.sub(r"\s+", " ", m.group(1)), line)
    line = _ROLE.sub(_role, line)
    line = _LINK.sub(lambda m: m.group(1), line)
    return _REF.sub(lambda m: m.group(1), line)


def rst_to_text(raw: str) -> str:
    """Drop Sphinx machinery a reader would not see; keep prose, signatures and code examples."""
    lines = raw.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    skip_indent: int | None = None  # dropping an indented block deeper than this
    options_after: int | None = None  # directive options may follow at greater indent
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        if options_after is not None:
            if line.strip() and indent > options_after and _OPTION.match(line):
                continue
            options_after = None
        m = _DIRECTIVE.match(line)
        if m:
            pad, name, arg = m.group(1), m.group(2), m.group(3).strip()
            base = name.split(":")[-1]
            if name in _DROP_DIRECTIVES or base in _DROP_DIRECTIVES:
                skip_indent = indent
                continue
            options_after = indent
            if base in _LABELS:
                out.append(pad + _LABELS[base] + (" " + rst_inline(arg) if arg else ""))
            elif base in _VERSION_LABELS:
                parts = arg.split(None, 2)
                if base == "deprecated-removed" and len(parts) >= 2:
                    label = _VERSION_LABELS[base].format(parts[0], parts[1])
                    rest = parts[2] if len(parts) > 2 else ""
                else:
                    label = _VERSION_LABELS[base].format(parts[0] if parts else "?")
                    rest = arg.split(None, 1)[1] if len(parts) > 1 else ""
                out.append(pad + label + (" " + rst_inline(rest) if rest else ""))
            elif base in (
                "code-block",
                "sourcecode",
                "code",
                "doctest",
                "testcode",
                "testoutput",
                "parsed-literal",
                "list-table",
                "csv-table",
                "table",
                "topic",
                "sidebar",
                "rubric",
                "centered",
                "glossary",
                "hlist",
                "container",
                "describe",
            ):
                if arg and base in (
                    "topic",
                    "sidebar",
                    "rubric",
                    "centered",
                    "list-table",
                    "table",
                    "describe",
                ):
                    out.append(pad + rst_inline(arg))
            elif arg:  # function, method, class, data, opcode, cmdoption, envvar ... -> signature
                out.append(pad + arg)
            continue
        if _COMMENT_OR_TARGET.match(line):  # `.. _label:`, `.. |sub| ...`, comments
            skip_indent = indent
            continue
        out.append(line)
    return rst_inline("\n".join(out))  # roles may span lines: convert on the whole text


def rst_title(raw: str) -> str:
    lines = raw.split("\n")
    for a, b in zip(lines, lines[1:]):
        under = b.strip()
        if (
            a.strip()
            and len(under) >= 3
            and len(set(under)) == 1
            and under[0] in "=-*#~^\"'`+"
            and not a.strip().startswith("..")
        ):
            return rst_inline(a.strip())
    return ""


def python_doc(source: Source) -> Iterator[Doc]:
    root = require(PYDOC_ROOT, source.packages[0])
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("whatsnew/changelog", "includes/")):
            continue
        raw = path.read_text(encoding="utf-8")
        yield Doc(source.name, f"{rel.removesuffix('.txt')}", rst_title(raw), rst_to_text(raw))


# ---------------------------------------------------------------------------------------------
# CPython standard library (code)

_STDLIB_EXCLUDE = re.compile(
    r"/(test|tests|idle_test|__pycache__|site-packages|dist-packages|pydoc_data|config-[^/]*)/"
    r"|/_sysconfigdata_[^/]*\.py$"
    r"|/encodings/(?!__init__|aliases|idna|punycode|utf_8|raw_unicode|unicode_escape)[^/]*\.py$"
)


def cpython_stdlib(source: Source) -> Iterator[Doc]:
    paths: set[str] = set()
    for package in source.packages:
        paths.update(p for p in dpkg_files(package) if p.endswith(".py"))
    prefix = "/usr/lib/python3.11/"
    for p in sorted(paths):
        if not p.startswith(prefix) or _STDLIB_EXCLUDE.search(p) or os.path.islink(p):
            continue
        rel = p.removeprefix(prefix)
        text = Path(p).read_text(encoding="utf-8", errors="replace")
        yield Doc(
            source.name,
            f"Lib/{rel}",
            rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__"),
            text,
        )


# ---------------------------------------------------------------------------------------------
# assembly: clean, filter, dedup, split, write


def extract_all(log: io.TextIOBase) -> tuple[list[Doc], dict[str, dict[str, int]]]:
    """All sources in a fixed order; returns kept docs and per-source drop statistics."""
    producers = [
        ("libreoffice-help-fr", lambda s: libreoffice_help(s, "fr")),
        ("manpages-fr", manpages_fr),
        ("debian-reference-fr", lambda s: debian_reference(s, "fr")),
        ("libreoffice-help-en-us", lambda s: libreoffice_help(s, "en-US")),
        ("python3.11-doc", python_doc),
        ("debian-reference-en", lambda s: debian_reference(s, "en")),
        ("cpython-stdlib", cpython_stdlib),
    ]
    seen: set[str] = set()
    docs: list[Doc] = []
    stats: dict[str, dict[str, int]] = {}
    for name, produce in producers:
        src = SOURCES[name]
        st = stats.setdefault(name, {"read": 0, "short": 0, "wrong_lang": 0, "duplicate": 0, "kept": 0})
        t0 = time.time()
        for doc in produce(src):
            st["read"] += 1
            doc.text = clean_code(doc.text) if src.lang == "code" else clean_prose(doc.text)
            doc.title = unicodedata.normalize("NFC", doc.title)
            if len(doc.text) < MIN_CHARS:
                st["short"] += 1
                continue
            if not looks_like(doc.text, src.lang):
                st["wrong_lang"] += 1
                continue
            digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
            if digest in seen:
                st["duplicate"] += 1
                continue
            seen.add(digest)
            doc.lang, doc.license = src.lang, src.license
            doc.id = f"{name}:{doc.path}"
            docs.append(doc)
            st["kept"] += 1
        print(f"  {name}: {st} ({time.time() - t0:.1f}s)", file=log)
    ids = [d.id for d in docs]
    if len(ids) != len(set(ids)):
        raise SystemExit("build_sample_corpus: internal error: duplicate document ids")
    return docs, stats


def order_key(doc: Doc) -> str:
    """A stable pseudo-random order: selection does not favour any source or path prefix."""
    return hashlib.sha256(doc.id.encode("utf-8")).hexdigest()


def select(
    docs: list[Doc], max_bytes: dict[str, int], heldout_bytes: dict[str, int]
) -> tuple[dict[str, list[Doc]], list[Doc]]:
    """Greedy fill in hash order: the held-out set first (short docs only), then each language's file."""
    main: dict[str, list[Doc]] = {lang: [] for lang in LANGS}
    heldout: list[Doc] = []
    for lang in LANGS:
        pool = sorted((d for d in docs if d.lang == lang), key=order_key)
        room = heldout_bytes.get(lang, 0)
        rest = []
        for d in pool:
            n = len(d.text.encode("utf-8"))
            if n <= room and len(d.text) <= HELDOUT_MAX_DOC_CHARS:
                heldout.append(d)
                room -= n
            else:
                rest.append(d)
        room = max_bytes[lang]
        for d in rest:
            n = len(d.text.encode("utf-8"))
            if n <= room:
                main[lang].append(d)
                room -= n
    by_path = lambda d: (d.source, d.path)  # noqa: E731 - file order: by source, then path
    return {lang: sorted(v, key=by_path) for lang, v in main.items()}, sorted(heldout, key=by_path)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def jsonl_zst(docs: list[Doc]) -> bytes:
    body = "".join(json.dumps(d.record(), ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True, threads=0)
    return cctx.compress(body)


def provenance(
    out_files: dict[str, tuple[list[Doc], bytes]],
    stats: dict[str, dict[str, int]],
    max_bytes: dict[str, int],
    heldout_bytes: dict[str, int],
) -> str:
    def count(docs: list[Doc], key: str, value: str) -> tuple[int, int]:
        sel = [d for d in docs if getattr(d, key) == value]
        return len(sel), sum(len(d.text) for d in sel)

    main_docs = [d for name, (docs, _) in out_files.items() if name != "heldout.jsonl.zst" for d in docs]
    held_docs = out_files["heldout.jsonl.zst"][0]
    total_chars = sum(len(d.text) for d in main_docs) or 1
    lines = [
        "# Bundled sample corpus: provenance",
        "",
        "Generated by `scripts/build_sample_corpus.py` (this file is rewritten on every build).",
        "Real French prose, English prose and Python code from openly licensed Debian packages, cleaned",
        "to plain-text documents, for the demo, the quickstart recipe and the tests. Each line of a",
        "`.jsonl.zst` file is one JSON document with `id` (stable: `<source>:<path>`), `source`, `lang`",
        "(`fr`, `en`, `code`), `license` (SPDX), `title`, `path` (inside the package) and `text`.",
        "",
        "## Rebuild",
        "",
        "```sh",
        "apt-get update",
        "apt-get install -y --no-install-recommends libreoffice-help-fr libreoffice-help-en-us \\",
        "    manpages-fr debian-reference-fr debian-reference-en python3.11-doc mandoc libpython3.11-stdlib",
        "python scripts/build_sample_corpus.py --out data/samples",
        "sha256sum -c data/samples/SHA256SUMS   # run inside data/samples",
        "```",
        "",
        "The build is deterministic: sorted inputs, ids from paths, selection in sha256(id) order.",
        "The same package versions (below) and the same `zstandard` version "
        f"({zstandard.__version__}, level {ZSTD_LEVEL}) give byte-identical files.",
        "Budgets (UTF-8 bytes of text): "
        + ", ".join(f"{k} {v:,}" for k, v in max_bytes.items())
        + "; held out: "
        + ", ".join(f"{k} {v:,}" for k, v in heldout_bytes.items())
        + ".",
        "",
        "## Files",
        "",
        "| file | documents | characters | compressed bytes | share of characters |",
        "|---|---|---|---|---|",
    ]
    for name, (docs, blob) in out_files.items():
        chars = sum(len(d.text) for d in docs)
        share = "-" if name == "heldout.jsonl.zst" else f"{100 * chars / total_chars:.1f}%"
        lines.append(f"| {name} | {len(docs):,} | {chars:,} | {len(blob):,} | {share} |")
    total_bytes = sum(len(blob) for _, blob in out_files.values())
    lines += [
        f"| total | {len(main_docs) + len(held_docs):,} | "
        f"{total_chars + sum(len(d.text) for d in held_docs):,} | {total_bytes:,} | |",
        "",
        "Read a file with `zstd -dc data/samples/fr.jsonl.zst | head -n 1`, or in Python:",
        "`zstandard.ZstdDecompressor().stream_reader(open(path, 'rb'))` wrapped in",
        "`io.TextIOWrapper(..., encoding='utf-8')`, one `json.loads` per line.",
        "",
        "`heldout.jsonl.zst` mixes the three languages with documents that are in none of the other",
        f"files (short ones, at most {HELDOUT_MAX_DOC_CHARS:,} characters): use it for language-id and",
        "evaluation sanity checks and as a source of French/English prompts for the demo. The",
        "tokenizer step still makes its own hash-based validation split of the main files.",
        "",
        "## Sources",
        "",
    ]
    for name, src in SOURCES.items():
        versions = ", ".join(f"`{p}` {dpkg_version(p)}" for p in src.packages)
        n_main, c_main = count(main_docs, "source", name)
        n_held, c_held = count(held_docs, "source", name)
        st = stats.get(name, {})
        lines += [
            f"### {name} ({src.lang})",
            "",
            f"- Debian package: {versions} (Debian 12 bookworm)",
            f"- Upstream: {src.upstream}",
            f"- License: {src.license}",
            f"- Documents: {n_main:,} in `{'code' if src.lang == 'code' else src.lang}.jsonl.zst` "
            f"({c_main:,} characters) + {n_held:,} held out ({c_held:,} characters)",
            f"- Extraction: read {st.get('read', 0):,}, dropped {st.get('short', 0):,} under {MIN_CHARS} "
            f"characters, {st.get('wrong_lang', 0):,} not in the expected language, "
            f"{st.get('duplicate', 0):,} exact duplicates; {st.get('kept', 0):,} kept before the budget",
            f"- Cleaning: {src.cleaning}",
            "",
        ]
    lines += [
        "## Cleaning common to all prose",
        "",
        "Unicode NFC, LF line ends, control and zero-width characters removed, trailing blanks removed,",
        f"runs of empty lines collapsed to one; documents under {MIN_CHARS} characters dropped; a page",
        "must look like its language (share of French vs English function words) or it is dropped;",
        "exact duplicates (sha256 of the cleaned text, across all sources) keep their first occurrence.",
        "Code is kept verbatim apart from line ends.",
        "",
    ]
    return "\n".join(lines)


def parse_budget(items: list[str] | None, default: dict[str, int], flag: str) -> dict[str, int]:
    budget = dict(default)
    for item in items or []:
        lang, sep, value = item.partition("=")
        if not sep or lang not in LANGS:
            raise SystemExit(
                f"build_sample_corpus: {flag} {item!r}: expected LANG=BYTES with LANG in {LANGS}"
            )
        try:
            budget[lang] = int(float(value))
        except ValueError:
            raise SystemExit(f"build_sample_corpus: {flag} {item!r}: {value!r} is not a number") from None
    return budget


def build(
    out: Path, max_bytes: dict[str, int], heldout_bytes: dict[str, int], log: io.TextIOBase = sys.stderr
) -> dict[str, Path]:
    t0 = time.time()
    docs, stats = extract_all(log)
    main, heldout = select(docs, max_bytes, heldout_bytes)
    out.mkdir(parents=True, exist_ok=True)
    out_files: dict[str, tuple[list[Doc], bytes]] = {}
    for lang in LANGS:
        out_files[f"{lang}.jsonl.zst"] = (main[lang], jsonl_zst(main[lang]))
    out_files["heldout.jsonl.zst"] = (heldout, jsonl_zst(heldout))
    written: dict[str, Path] = {}
    for name, (_, blob) in out_files.items():
        atomic_write(out / name, blob)
        written[name] = out / name
    sums = "".join(
        f"{hashlib.sha256(blob).hexdigest()}  {name}\n" for name, (_, blob) in sorted(out_files.items())
    )
    atomic_write(out / "SHA256SUMS", sums.encode())
    atomic_write(out / "PROVENANCE.md", provenance(out_files, stats, max_bytes, heldout_bytes).encode())
    for name, (d, blob) in out_files.items():
        print(f"{name}: {len(d)} docs, {sum(len(x.text) for x in d):,} chars, {len(blob):,} bytes", file=log)
    print(f"built in {time.time() - t0:.1f}s", file=log)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/samples"), help="output folder")
    ap.add_argument(
        "--max-bytes",
        action="append",
        metavar="LANG=BYTES",
        help=f"text budget per language (repeatable); defaults {DEFAULT_MAX_BYTES}",
    )
    ap.add_argument(
        "--heldout-bytes",
        action="append",
        metavar="LANG=BYTES",
        help=f"held-out text per language (repeatable); defaults {DEFAULT_HELDOUT_BYTES}",
    )
    args = ap.parse_args(argv)
    build(
        args.out,
        parse_budget(args.max_bytes, DEFAULT_MAX_BYTES, "--max-bytes"),
        parse_budget(args.heldout_bytes, DEFAULT_HELDOUT_BYTES, "--heldout-bytes"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
