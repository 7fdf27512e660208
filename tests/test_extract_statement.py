"""Statement tables, header fields and reconciliation on the corpus statements."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ingest.extract import extract
from docteller.parsing.money import parse_amount as parse_money

TEXT_PDFS = [
    "bank_statement_ocr_nz/tutorial_everyday_statement.pdf",
    "bank_statement_ocr_nz/anz_everyday_pdf_sample.pdf",
    "bank_statement_ocr_nz/asb_everyday_pdf_sample.pdf",
    "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf",
    "transtractor/test1.pdf",
    "monopoly/example_statement.pdf",
]


def _gt(corpus):
    rows = [json.loads(l) for l in (corpus / "statements" / "statements_groundtruth.jsonl").read_text().splitlines() if l.strip()]
    return {r["file"]: r["fields"] for r in rows}


def _recall(result, expected):
    got = [(t.date, Decimal(t.amount)) for t in result.transactions]
    hits = 0
    for t in expected:
        key = (t["date"], Decimal(str(t["amount"])).quantize(Decimal("0.01")))
        if key in got:
            got.remove(key)
            hits += 1
    return hits / len(expected)


@pytest.mark.parametrize("name", TEXT_PDFS)
def test_text_pdf_transactions(corpus, name):
    gt = _gt(corpus)[name]
    result = extract(corpus / "statements" / name, "statement")
    assert result.doc_type == "statement"
    assert _recall(result, gt["transactions"]) >= 0.97
    assert len(result.transactions) <= len(gt["transactions"]) + 1


def test_nz_statement_header_and_reconciliation(corpus):
    result = extract(corpus / "statements" / "bank_statement_ocr_nz/tutorial_everyday_statement.pdf")
    assert result.doc_type == "statement"  # auto-detected
    assert result.value("bank_name") == "Kowhai Bank NZ"
    assert result.value("account_holder") == "JAMIE SAMPLE"
    assert result.value("account_number").endswith("0-00".replace("-", "")[-4:]) and "*" in result.value("account_number")
    assert result.fields["account_number"].sensitive
    assert result.value("statement_period") == "2026-05-01/2026-05-31"
    assert result.value("currency") == "NZD"
    assert result.value("opening_balance") == "1250.00" and result.value("closing_balance") == "2716.50"
    assert result.checks["balance_reconciles"].ok
    assert result.checks["running_balance"].ok
    visa = next(t for t in result.transactions if t.description.startswith("VISA NEW WORLD"))
    assert "Orig date 06/05/2026" in visa.description  # continuation line joined to its row
    assert all(t.row_ok for t in result.transactions)


def test_transtractor_running_balance_names_the_misprinted_row(corpus):
    result = extract(corpus / "statements" / "transtractor/test1.pdf", "statement")
    # Row 30 prints "3978.53 CR" where the true balance is 73,978.53: exactly that row breaks.
    check = result.checks["running_balance"]
    assert not check.ok and "breaks at row 30 of " in check.detail
    assert result.transactions[29].row_ok is False
    assert result.transactions[31].row_ok is None or result.transactions[31].row_ok
    assert result.checks["balance_reconciles"].ok
    multi = next(t for t in result.transactions if t.description.startswith("Transaction 31"))
    assert multi.description == "Transaction 31 Goes over multiple pages"


def test_tampered_amount_breaks_reconciliation(corpus, tmp_path):
    import pymupdf

    src = corpus / "statements" / "bank_statement_ocr_nz/anz_everyday_pdf_sample.pdf"
    doc = pymupdf.open(src)
    page = doc[0]
    hit = page.search_for("268.15")[0]
    page.add_redact_annot(hit, text="278.15", fontsize=9)
    page.apply_redactions()
    out = tmp_path / "tampered.pdf"
    doc.save(out)
    result = extract(out, "statement")
    assert not result.checks["balance_reconciles"].ok
    assert not result.checks["running_balance"].ok
    assert "breaks at row 3 of " in result.checks["running_balance"].detail


def test_parse_money_formats():
    assert parse_money("1,234.56") == Decimal("1234.56")
    assert parse_money("1.234,56", decimal_comma=True) == Decimal("1234.56")
    assert parse_money("(412.16)") == Decimal("-412.16")
    assert parse_money("16,144.58 DR") == Decimal("-16144.58")
    assert parse_money("90,350 CR") == Decimal("90350")
    assert parse_money("-€ 5,00", decimal_comma=True) == Decimal("-5.00")
    assert parse_money("Transaction") is None
    assert parse_money("2026") is None


def test_scanned_statement_ocr(corpus):
    name = "bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"
    result = extract(corpus / "statements" / name, "statement")
    assert _recall(result, _gt(corpus)[name]["transactions"]) >= 0.9
    assert result.checks["balance_reconciles"].ok


def test_statement_photo_upload(corpus):
    """An image of a statement (the PDF page rasterised, as a phone scan app would send it)."""
    import pymupdf

    doc = pymupdf.open(corpus / "statements" / "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf")
    png = doc[0].get_pixmap(dpi=120).tobytes("png")
    result = extract("statement.png", data=png, name="statement.png")
    assert result.doc_type == "statement"
    expected = _gt(corpus)["bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf"]["transactions"]
    assert _recall(result, expected) == 1.0
    assert result.checks["balance_reconciles"].ok and result.checks["running_balance"].ok


CURRENCY_CASES = [
    # (file, whether the statement itself names its country or currency)
    ("bank_statement_ocr_nz/tutorial_everyday_statement.pdf", True),
    ("bank_statement_ocr_nz/anz_everyday_pdf_sample.pdf", True),
    ("bank_statement_ocr_nz/asb_everyday_pdf_sample.pdf", False),
    ("bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf", False),
    ("bankstatemently/bsb-001/bsb-001-statement.pdf", True),
    ("bankstatemently/bsb-002/bsb-002-statement.pdf", True),
    ("bankstatemently/bsb-003/bsb-003-statement.pdf", True),
    ("bankstatemently/bsb-004/bsb-004-statement.pdf", True),
    ("bankstatemently/bsb-005/bsb-005-statement.pdf", True),
]


@pytest.mark.parametrize(("name", "named"), CURRENCY_CASES)
def test_currency_comes_from_the_statement_itself(corpus, name, named):
    from docteller.settings import Settings

    result = extract(corpus / "statements" / name, "statement")
    currency = result.fields["currency"]
    assert currency.value == _gt(corpus)[name]["currency"]
    # A bare "$" with only a phone or account-number format to go on is a guess: it is marked
    # uncertain (and says what it was guessed from), never stated as fact.
    assert currency.uncertain(Settings().uncertain_below) is not named
    if not named:
        assert currency.source == "inferred" and "$ sign" in currency.raw


def test_a_correction_rechecks_reconciliation(corpus):
    from docteller.model import CheckStatus, Field
    from ingest.extract import recheck

    result = extract(corpus / "statements" / "bank_statement_ocr_nz/tutorial_everyday_statement.pdf")
    assert result.checks["balance_reconciles"].ok
    result.fields["closing_balance"] = Field(name="closing_balance", value="2000.00", confidence=1.0, source="user")
    recheck(result)
    check = result.checks["balance_reconciles"]
    assert check.ok is False and "!= closing 2000.00 (difference -716.50)" in check.detail
    result.fields["closing_balance"] = Field(name="closing_balance", value="two thousand", confidence=1.0, source="user")
    recheck(result)
    assert result.checks["balance_reconciles"].status is CheckStatus.not_read
    assert "'two thousand' is not an amount" in result.checks["balance_reconciles"].detail
    # A wrong opening balance breaks the first printed balance too.
    result.fields["closing_balance"] = Field(name="closing_balance", value="2716.50", confidence=1.0, source="user")
    result.fields["opening_balance"] = Field(name="opening_balance", value="1200.00", confidence=1.0, source="user")
    recheck(result)
    assert result.checks["balance_reconciles"].ok is False and result.checks["running_balance"].ok is False
    assert result.transactions[0].row_ok is False and result.transactions[1].row_ok


def test_balance_lines_printed_in_the_table_become_cited_fields(corpus):
    # bsb-001 prints its opening balance as a table row ("Balance Brought Forward"): the field
    # keeps that row's page and box, so answers can outline it and corrections re-check it.
    result = extract(corpus / "statements" / "bankstatemently/bsb-001/bsb-001-statement.pdf", "statement")
    opening = result.fields["opening_balance"]
    assert opening.value == "15450.75" and "Brought Forward" in opening.raw
    assert opening.page == 2 and opening.bbox is not None and opening.bbox.width > 100  # the row is on p. 2
