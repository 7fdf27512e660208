"""One page model: an upload read (and OCR'd) once, one rasteriser, the shared parsers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from docteller.model import BBox, TextLine
from docteller.parsing.dates import find_date, month_number, parse_date_parts, parse_printed_date
from docteller.parsing.money import parse_amount, to_decimal, uses_decimal_comma
from docteller.parsing.rows import group_rows

SCANNED_STATEMENT = "statements/bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"


@pytest.fixture()
def ocr_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The image sizes the OCR engine is asked to read (its reading cache emptied first)."""
    from ingest.ocr import ReadingCache, get_ocr_engine

    engine = get_ocr_engine()
    inner = engine._engine
    sizes: list[tuple[int, int]] = []

    def counting(image, *args, **kwargs):
        sizes.append(image.shape[:2])
        return inner(image, *args, **kwargs)

    monkeypatch.setattr(engine, "_engine", counting)
    monkeypatch.setattr(engine, "_cache", ReadingCache())
    return sizes


def test_a_scanned_upload_is_ocrd_once_for_extraction_and_the_index(corpus, ocr_reads) -> None:
    from ingest.chunking import chunk_document
    from ingest.extract import extract_document, read_upload

    pages: list[tuple[int, int]] = []
    document = read_upload(corpus / SCANNED_STATEMENT, progress=lambda page, count: pages.append((page, count)))
    result = extract_document(document)
    chunks = chunk_document(document)

    assert len(ocr_reads) == 2 == document.page_count  # one reading per page, nothing read twice
    assert pages == [(1, 2), (2, 2)]
    assert result.doc_id == document.id and result.doc_type == "statement" and len(result.transactions) == 12
    assert all(p.ocr_used and p.words and p.phrases and p.image is None for p in document.pages)
    # The index gets the same reading: the transactions' descriptions are searchable text.
    indexed = " ".join(c.text for c in chunks)
    assert all(t.description.split()[0] in indexed for t in result.transactions)


def test_the_knowledge_base_keeps_typed_table_rows_and_no_word_geometry() -> None:
    from docteller.settings import DEFAULT_KB_DIR
    from ingest.loaders import load_document

    doc = load_document(DEFAULT_KB_DIR / "fee-schedule.pdf")
    assert doc.pages and all(not p.words and not p.phrases for p in doc.pages)
    rows = [b for p in doc.pages for b in p.blocks if b.kind == "table_row"]
    assert rows and all(b.cells and b.text == " | ".join(b.cells).strip(" |") for b in rows)
    assert rows[0].cells == ["Account", "Monthly fee", "How to avoid the fee"] and rows[0].table_header


def test_one_rasteriser_at_the_resolution_asked(corpus) -> None:
    from ingest.raster import page_pixels, rasterise
    from ingest.sniff import open_pdf

    with open_pdf(corpus / SCANNED_STATEMENT) as pdf:
        page = pdf[0]
        small, large = rasterise(page, 72), rasterise(page, 144)
        assert abs(small.width - page.rect.width) <= 1 and abs(large.width - 2 * small.width) <= 1
        assert rasterise(page, 72, gray=True).mode == "L"
        assert page_pixels(page, 120).shape[2] == 3


def test_money_as_statements_print_it() -> None:
    assert parse_amount("(12.00)") == Decimal("-12.00")
    assert parse_amount("90,350 CR") == Decimal("90350")
    assert parse_amount("1.234,56", decimal_comma=True) == Decimal("1234.56")
    assert parse_amount("-€ 5,00") == Decimal("-5.00")
    assert parse_amount("12345678") is None  # a reference number is no amount
    assert to_decimal("$1,234.50") == Decimal("1234.50") and to_decimal("two thousand") is None
    assert to_decimal("NaN") is None
    assert uses_decimal_comma("Saldo 1.234,56 en 12,00") and not uses_decimal_comma("1,234.56 and 7.00")


def test_dates_in_one_month_table() -> None:
    assert month_number("août") == month_number("AOUT") == month_number("Aug.") == 8
    assert parse_date_parts("1 févr. 24") == (1, 2, 2024)
    assert parse_date_parts("03/04", day_first=False) == (4, 3, None)
    assert parse_date_parts("Brunch") is None
    assert parse_printed_date("12 AUGUST/AOUT 74") == "1974-08-12"
    assert find_date("what was my balance on 5 March?", 2024) == dt.date(2024, 3, 5)
    assert find_date("and on March 7th, 2023?", None) == dt.date(2023, 3, 7)


def test_rows_keep_stacked_lines_apart_and_side_by_side_together() -> None:
    def line(text: str, x0: float, y0: float, x1: float, y1: float) -> TextLine:
        return TextLine(text=text, bbox=BBox(x0=x0, y0=y0, x1=x1, y1=y1), confidence=0.9)

    right, left = line("CO", 601, 72, 676, 107), line("SAM SAM TRADING", 125, 63, 593, 109)
    below = line("BANDAR BUKIT RAJA", 200, 140, 620, 180)
    rows = group_rows([below, right, left])
    assert [[ln.text for ln in row] for row in rows] == [["SAM SAM TRADING", "CO"], ["BANDAR BUKIT RAJA"]]
