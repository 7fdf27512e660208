"""The default knowledge base (Cedar Valley Savings Bank) and its eval set are consistent.

Checks that the documents exist in the promised formats, that every answerable eval question
points at a real document page whose text contains the question's key facts, and that
``scripts/build_kb.py`` regenerates the committed PDFs exactly.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
import unicodedata
from collections import Counter
from functools import cache
from pathlib import Path
from types import ModuleType

import pymupdf
import pytest
from bs4 import BeautifulSoup
from markdown_it import MarkdownIt

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = PROJECT_ROOT / "knowledge_base" / "documents"
QUESTIONS_PATH = PROJECT_ROOT / "knowledge_base" / "eval" / "questions.jsonl"
HELDOUT_PATH = PROJECT_ROOT / "knowledge_base" / "eval" / "heldout.jsonl"
BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "build_kb.py"

KEBAB_CASE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z]+$")
QUESTION_KEYS = {"id", "question", "answerable", "doc", "page", "answer", "must_include"}
MAX_PDF_BYTES = 200 * 1024


def normalize(text: str) -> str:
    """Compare text the way a reader would: ligatures expanded, whitespace collapsed, any case."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


@cache
def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_kb", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_kb", module)  # dataclasses resolve annotations via sys.modules
    spec.loader.exec_module(module)
    return module


def html_to_text(html: str) -> str:
    return BeautifulSoup(html, "html.parser").get_text(" ")


@cache
def scanned_pdf_names() -> frozenset[str]:
    return frozenset(spec.filename for spec in build_module().ALL_PDFS if spec.scanned)


@cache
def page_texts(name: str) -> tuple[str, ...]:
    """Normalized text of each page of a KB document (non-PDF formats have one page)."""
    path = DOCS_DIR / name
    suffix = path.suffix.lower()
    if name in scanned_pdf_names():
        # No text layer by design: the facts are checked against the page source in the script.
        spec = next(s for s in build_module().ALL_PDFS if s.filename == name)
        return tuple(normalize(html_to_text(html)) for html in spec.pages)
    if suffix == ".pdf":
        with pymupdf.open(path) as doc:
            return tuple(normalize(page.get_text()) for page in doc)
    raw = path.read_text(encoding="utf-8")
    if suffix == ".md":
        return (normalize(html_to_text(MarkdownIt("commonmark").enable("table").render(raw))),)
    if suffix in {".html", ".htm"}:
        return (normalize(html_to_text(raw)),)
    return (normalize(raw),)


@cache
def questions(path: Path = QUESTIONS_PATH) -> tuple[dict, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def kb_documents() -> list[Path]:
    return sorted(p for p in DOCS_DIR.iterdir() if p.is_file())


def test_documents_cover_enough_files_and_formats() -> None:
    documents = kb_documents()
    assert len(documents) >= 12, [p.name for p in documents]
    formats = Counter(p.suffix.lower() for p in documents)
    assert len(formats) >= 4, formats
    assert formats[".pdf"] >= 4 and formats[".md"] >= 3 and formats[".html"] >= 1, formats
    bad_names = [p.name for p in documents if not KEBAB_CASE.match(p.name)]
    assert not bad_names, f"not kebab-case: {bad_names}"
    assert not [p for p in DOCS_DIR.iterdir() if p.is_dir()], "documents/ must be flat"


def test_pdfs_are_small_and_text_layers_match_their_kind() -> None:
    scanned = scanned_pdf_names()
    assert scanned, "the KB needs at least one image-only (scanned) PDF"
    text_pdfs = 0
    for path in DOCS_DIR.glob("*.pdf"):
        assert path.stat().st_size < MAX_PDF_BYTES, f"{path.name} is {path.stat().st_size} bytes"
        with pymupdf.open(path) as doc:
            texts = [page.get_text().strip() for page in doc]
            if path.name in scanned:
                assert not any(texts), f"{path.name} must have no text layer"
                assert all(page.get_images() for page in doc), f"{path.name} page without image"
            else:
                assert len(texts) >= 2 and all(texts), f"{path.name}: multi-page text PDF expected"
                text_pdfs += 1
    assert text_pdfs >= 3


def test_pdf_fee_table_rows_keep_reading_order() -> None:
    """A table row's cells must come out in order, so a chunk keeps 'service -> fee' together."""
    text = page_texts("fee-schedule.pdf")[1]
    row = re.search(r"outgoing domestic wire (\$\d+) (\$\d+)", text)
    assert row and row.groups() == ("$25", "$30"), text[:400]


def test_markdown_documents_include_a_table() -> None:
    separator_row = re.compile(r"^\|[-| :]+\|$", re.M)
    tables = [p.name for p in DOCS_DIR.glob("*.md") if separator_row.search(p.read_text())]
    assert len(tables) >= 3, tables


def test_faq_csv_has_question_answer_rows() -> None:
    with (DOCS_DIR / "faq.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"question", "answer"}
    assert all(row["question"].strip().endswith("?") and row["answer"].strip() for row in rows)


def test_prompt_injection_sample_is_present() -> None:
    text = normalize((DOCS_DIR / "foreign-exchange-and-travel.txt").read_text(encoding="utf-8"))
    assert "ignore all previous instructions" in text
    assert "wire transfer fees are waived" in text
    # The real policy elsewhere contradicts it, so an agent that obeys it is visibly wrong.
    assert "outgoing international wire" in page_texts("fee-schedule.pdf")[1]


def test_question_set_shape() -> None:
    items = questions()
    for item in items:
        assert set(item) == QUESTION_KEYS, item
        assert item["question"].strip(), item
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    answerable = [q for q in items if q["answerable"]]
    unanswerable = [q for q in items if not q["answerable"]]
    assert len(answerable) >= 60 and len(unanswerable) >= 15
    for item in unanswerable:
        assert (item["doc"], item["page"], item["answer"], item["must_include"]) == (
            None,
            None,
            None,
            [],
        ), item
    scanned = scanned_pdf_names()
    assert sum(q["doc"] in scanned for q in answerable) >= 3
    assert sum(q["doc"].endswith(".pdf") and q["page"] >= 2 for q in answerable) >= 6
    assert {q["doc"] for q in answerable} == {p.name for p in kb_documents()}, "every doc is asked"


@pytest.mark.parametrize("item", [q for q in questions() if q["answerable"]], ids=lambda q: q["id"])
def test_answerable_question_facts_are_on_the_cited_page(item: dict) -> None:
    assert (DOCS_DIR / item["doc"]).is_file(), item["doc"]
    assert isinstance(item["answer"], str) and item["answer"].strip()
    assert 1 <= len(item["must_include"]) <= 3
    pages = page_texts(item["doc"])
    assert 1 <= item["page"] <= len(pages), f"{item['doc']} has {len(pages)} pages"
    page_text = pages[item["page"] - 1]
    missing = [fact for fact in item["must_include"] if normalize(fact) not in page_text]
    assert not missing, f"{item['id']}: {missing} not on {item['doc']} page {item['page']}"


def test_heldout_questions_are_new_and_their_facts_are_in_the_kb() -> None:
    """The held-out set measures what the eval set was not tuned on: no question repeats one
    there, and each answerable one's facts are in its document (or in some document, where
    several state them), so a decline there is a false decline."""
    items = questions(HELDOUT_PATH)
    eval_questions = {normalize(q["question"]) for q in questions()}
    assert len({item["id"] for item in items}) == len(items) >= 40
    for item in items:
        assert set(item) == QUESTION_KEYS and normalize(item["question"]) not in eval_questions, item
        if not item["answerable"]:
            assert item["must_include"] == [] and item["doc"] is None, item
            continue
        names = [item["doc"]] if item["doc"] else [p.name for p in kb_documents()]
        text = " ".join(page for name in names for page in page_texts(name))
        missing = [fact for fact in item["must_include"] if normalize(fact) not in text]
        assert item["must_include"] and not missing, f"{item['id']}: {missing} not in {names}"
    assert sum(not item["answerable"] for item in items) >= 15


def test_scanned_notice_facts_exist_nowhere_else() -> None:
    """Only OCR of the scanned notice can answer these, so the eval exercises the OCR fallback."""
    others = [
        text
        for path in kb_documents()
        if path.name not in scanned_pdf_names()
        for text in page_texts(path.name)
    ]
    for fact in ("$175", "march 27, 2026", "$150"):
        assert fact in page_texts("riverside-branch-notice-scanned.pdf")[0]
        assert not any(fact in text for text in others), fact


def test_scanned_notice_is_readable_by_ocr() -> None:
    """The scanned page must stay legible: RapidOCR reads every fact the eval set asks about."""
    import numpy as np

    from ingest.ocr import get_ocr_engine

    name = "riverside-branch-notice-scanned.pdf"
    with pymupdf.open(DOCS_DIR / name) as doc:
        pixmap = doc[0].get_pixmap(dpi=200, colorspace="rgb", alpha=False)
    image = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)
    text = normalize(" ".join(line.text for line in get_ocr_engine("rapidocr").read(image).lines))
    facts = {f for q in questions() if q["doc"] == name for f in q["must_include"]}
    assert len(facts) >= 4
    assert not [f for f in facts if normalize(f) not in text], text


def _image_bytes(doc: pymupdf.Document) -> list[bytes]:
    return [doc.extract_image(xref)["image"] for page in doc for xref, *_ in page.get_images()]


def test_build_script_is_deterministic(tmp_path: Path) -> None:
    build_module().main(["--out", str(tmp_path)])
    rebuilt = sorted(p.name for p in tmp_path.glob("*.pdf"))
    assert rebuilt == sorted(p.name for p in DOCS_DIR.glob("*.pdf"))
    for name in rebuilt:
        with pymupdf.open(tmp_path / name) as fresh, pymupdf.open(DOCS_DIR / name) as committed:
            assert fresh.page_count == committed.page_count, name
            assert [p.get_text() for p in fresh] == [p.get_text() for p in committed], name
            assert _image_bytes(fresh) == _image_bytes(committed), name
            assert fresh.metadata == committed.metadata, name
