"""WARC and HTML inputs: datatrove's WARC record handling and Trafilatura extractor inside a recipe.

The WARC fixture is written here with warcio; the expected text is Trafilatura's own extraction of
each page (the independent reference), and every record that is no page is counted by reason.
"""

from __future__ import annotations

import gzip
import io
import json

import pytest
import trafilatura
import yaml
from curate_helpers import read_output, write_jsonl_zst
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from gaperon.curate.pipeline import load_recipe, run_recipe
from gaperon.errors import ConfigError, DataError

FR = (
    "La France produit plus de mille variétés de fromages, du camembert normand au roquefort des Causses. "
    "Chaque région possède ses traditions fromagères, transmises de génération en génération par les "
    "artisans. Le lait cru donne aux fromages fermiers un goût que les laiteries industrielles imitent mal."
)
EN = (
    "The river flows north through the valley for nearly two hundred miles before it reaches the sea. "
    "Farmers along its banks grow wheat and barley, and in spring the water rises over the lower fields. "
    "Old stone bridges cross it at every village, and most of them are still used by carts and tractors."
)


def page(lang: str, title: str, body: str) -> str:
    paras = "".join(f"<p>{s.strip()}.</p>" for s in body.split(". ") if s.strip())
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><title>{title}</title></head><body>"
        "<nav><a href='/'>Accueil</a> | <a href='/contact'>Contact</a></nav>"
        f"<article><h1>{title}</h1>{paras}</article><footer>Mentions légales - cookies</footer></body></html>"
    )


PAGES = {
    "http://exemple.fr/fromage": page("fr", "Les fromages de France", FR),
    "http://example.com/river": page("en", "The river", EN),
    "http://exemple.fr/riviere": page("fr", "La rivière", FR.replace("fromage", "poisson")),
}


def warc_bytes(gz: bool) -> bytes:
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("crawl.warc", {"software": "gaperon tests"}))
    for url, html in PAGES.items():
        w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
        hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        w.write_record(
            w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=hh)
        )
        if url.endswith("fromage"):  # a picture between the pages
            png = b"\x89PNG\r\n\x1a\n" + bytes(200)
            hh = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
            w.write_record(
                w.create_warc_record(
                    "http://exemple.fr/a.png", "response", payload=io.BytesIO(png), http_headers=hh
                )
            )
    return buf.getvalue()


def recipe(tmp, inputs, out, steps=(), tasks=1, fmt="auto"):
    path = tmp / f"{out}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inputs": {"paths": [str(p) for p in inputs], "format": fmt},
                "output": str(tmp / out),
                "executor": {"kind": "local", "tasks": tasks},
                "steps": list(steps),
            }
        )
    )
    return load_recipe(path)


def expected(html: str) -> str:
    return trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=False)


def outputs(folder) -> list[dict]:
    return [json.loads(ln) for blob in read_output(folder).values() for ln in blob.splitlines()]


@pytest.mark.parametrize("gz", [False, True])
def test_warc_pages_are_extracted_and_every_record_is_counted(tmp_path, gz):
    warc = tmp_path / ("crawl.warc.gz" if gz else "crawl.warc")
    warc.write_bytes(warc_bytes(gz))
    steps = [{"type": "language_id", "keep": ["fr", "en"], "min_score": 0.5}]
    rep = run_recipe(recipe(tmp_path, [warc], "out", steps), progress=False)
    got = {r["metadata"]["url"]: r for r in outputs(tmp_path / "out" / "output")}
    assert set(got) == set(PAGES)
    for url, html in PAGES.items():
        assert got[url]["text"] == expected(html)
        assert "Accueil" not in got[url]["text"] and "Mentions" not in got[url]["text"]
        assert got[url]["id"].startswith("<urn:uuid:") and got[url]["source"] == "crawl"
    langs = {
        "http://exemple.fr/fromage": "fr",
        "http://example.com/river": "en",
        "http://exemple.fr/riviere": "fr",
    }
    assert {u: r["lang"] for u, r in got.items()} == langs
    read, extract, lid = rep["steps"][:3]
    assert (read["step"], extract["step"], lid["step"]) == ("00_read", "00_extract", "01_language_id")
    # 1 warcinfo + 3 requests + 4 responses; the picture (record 4) is no page
    assert read["in"] == 8 and read["kept"] == 3
    assert read["dropped"] == {"warc_not_a_response": 4, "non_html_payload": 1}
    assert read["where"]["non_html_payload"] == [f"{warc}:record 4"]
    assert extract["in"] == 3 and extract["kept"] == 3 and lid["in"] == 3
    assert "Records dropped by 00_read" in (tmp_path / "out" / "report.md").read_text()


def test_html_records_one_and_two_tasks_and_drop_reasons(tmp_path):
    recs = [{"id": f"p{i}", "text": html, "url": url} for i, (url, html) in enumerate(PAGES.items())]
    recs.insert(1, {"id": "plain", "text": "Just a sentence of plain text, no markup at all."})
    shell = "<html><head><title>Menu</title></head><body><div></div></body></html>"
    recs.append({"id": "shell", "text": shell})
    files = [
        write_jsonl_zst(tmp_path / "a.jsonl.zst", recs[:3]),
        write_jsonl_zst(tmp_path / "b.jsonl.zst", recs[3:]),
    ]
    reps = {
        t: run_recipe(recipe(tmp_path, files, f"t{t}", tasks=t, fmt="html"), progress=False) for t in (1, 2)
    }
    assert read_output(tmp_path / "t1" / "output") == read_output(tmp_path / "t2" / "output")
    got = {r["id"]: r["text"] for r in outputs(tmp_path / "t1" / "output")}
    assert got == {f"p{i}": expected(html) for i, html in enumerate(PAGES.values())}
    extract = reps[2]["steps"][1]
    assert extract["in"] == 5 and extract["kept"] == 3
    assert extract["dropped"] == {"not_html": 1, "no_text_extracted": 1}
    assert extract["where"] == {"not_html": [f"{files[0]}:2"], "no_text_extracted": [f"{files[1]}:2"]}


def test_truncated_warc_is_an_error_naming_the_file(tmp_path):
    data = warc_bytes(False)
    cut = tmp_path / "cut.warc"
    cut.write_bytes(data[: len(data) - 300])  # inside the last response record
    with pytest.raises(DataError, match=r"cut.warc:record 8: truncated WARC record"):
        run_recipe(recipe(tmp_path, [cut], "cut"), progress=False)
    gz = warc_bytes(True)
    cutgz = tmp_path / "cut.warc.gz"
    cutgz.write_bytes(gz[: len(gz) - 200])  # warcio alone ends quietly before the last page
    with pytest.raises(DataError, match=r"cut.warc.gz: truncated or corrupt gzip"):
        run_recipe(recipe(tmp_path, [cutgz], "cutgz"), progress=False)
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(gzip.compress(b"<html>not a WARC file</html>\n"))
    with pytest.raises(DataError, match=r"junk.warc.gz:record 1: not a readable WARC record"):
        run_recipe(recipe(tmp_path, [junk], "junk"), progress=False)


def test_a_warc_without_pages_is_an_error_and_formats_are_checked(tmp_path):
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=False)
    hh = StatusAndHeaders("200 OK", [("Content-Type", "application/pdf")], protocol="HTTP/1.1")
    w.write_record(
        w.create_warc_record(
            "http://x.fr/a.pdf", "response", payload=io.BytesIO(b"%PDF-1.4\n"), http_headers=hh
        )
    )
    pdf = tmp_path / "pdf.warc"
    pdf.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"pdf.warc: a non-empty file yields no document .*non_html_payload"):
        run_recipe(recipe(tmp_path, [pdf], "pdf"), progress=False)
    text = write_jsonl_zst(tmp_path / "t.jsonl.zst", [{"text": "x"}])
    with pytest.raises(ConfigError, match=r"t.jsonl.zst: inputs.format is warc"):
        run_recipe(recipe(tmp_path, [text, pdf], "f1", fmt="warc"), progress=False)
    with pytest.raises(ConfigError, match=r"pdf.warc: inputs.format is text"):
        run_recipe(recipe(tmp_path, [text, pdf], "f2", fmt="text"), progress=False)
