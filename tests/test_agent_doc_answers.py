"""Questions about the customer's own documents, computed in code from real extracted statements."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from agent.doc_answers import answer_document_question
from docteller.model import ExtractionResult, Field, UploadedDocument

STATEMENTS = {
    "tutorial": "bank_statement_ocr_nz/tutorial_everyday_statement.pdf",
    "transtractor": "transtractor/test1.pdf",
}


def _truth(corpus: Path, rel: str) -> dict:
    for line in (corpus / "statements" / "statements_groundtruth.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["file"] == rel:
            return record["fields"]
    raise AssertionError(f"no ground truth for {rel}")


@pytest.fixture(scope="module", params=sorted(STATEMENTS))
def statement(request, corpus: Path) -> tuple[UploadedDocument, dict]:
    from ingest.extract import extract

    rel = STATEMENTS[request.param]
    result = extract(corpus / "statements" / rel)
    assert result.doc_type == "statement"
    return UploadedDocument(doc_id=result.doc_id, name=Path(rel).name, extraction=result), _truth(corpus, rel)


def _money(value: float) -> str:
    return f"{abs(Decimal(str(value))):,.2f}"


def test_largest_debit_and_credit_match_ground_truth(statement) -> None:
    upload, truth = statement
    amounts = [t["amount"] for t in truth["transactions"]]
    debit = answer_document_question("What was my largest debit?", [upload])
    assert debit is not None and _money(min(amounts)) in debit.text
    assert debit.citations and debit.citations[0].doc_id == upload.doc_id and debit.citations[0].page
    credit = answer_document_question("what's the biggest credit on my statement", [upload])
    assert credit is not None and _money(max(amounts)) in credit.text


def test_totals_and_counts_match_ground_truth(statement) -> None:
    upload, truth = statement
    debits = answer_document_question("How much did I spend in total?", [upload])
    assert debits is not None and _money(truth["total_debits"]) in debits.text
    credits = answer_document_question("what is the total of my deposits", [upload])
    assert credits is not None and _money(truth["total_credits"]) in credits.text
    count = answer_document_question("How many transactions are on my statement?", [upload])
    assert count is not None and f"{truth['transaction_count']} transactions" in count.text


def test_reconciliation_is_computed(statement) -> None:
    upload, truth = statement
    answer = answer_document_question("Does my statement reconcile?", [upload])
    assert answer is not None and answer.text.startswith("Yes")
    assert _money(truth["closing_balance_derived"]) in answer.text
    # A misread closing balance (e.g. corrected wrongly) is caught, with the difference shown.
    broken = upload.extraction.model_copy(deep=True)
    broken.fields["closing_balance"] = Field(name="closing_balance", value="1.00", page=1)
    again = UploadedDocument(doc_id=upload.doc_id, name=upload.name, extraction=broken)
    answer = answer_document_question("does my statement reconcile?", [again])
    assert answer is not None and answer.text.startswith("No")


def test_balance_on_a_date(statement) -> None:
    upload, truth = statement
    txs = truth["transactions"]
    middle = txs[len(txs) // 2]
    day = dt.date.fromisoformat(middle["date"])
    expected = [t for t in txs if dt.date.fromisoformat(t["date"]) <= day][-1]["balance"]
    answer = answer_document_question(f"what was my balance on {day.isoformat()}?", [upload])
    assert answer is not None and _money(expected) in answer.text


def _passport(expiry: str) -> UploadedDocument:
    result = ExtractionResult(
        source="passport.jpg",
        doc_id="p" * 64,
        doc_type="passport",
        fields={
            "expiry_date": Field(name="expiry_date", value=expiry, page=1, confidence=0.99),
            "document_number": Field(name="document_number", value="L898902C3", page=1, sensitive=True),
        },
    )
    return UploadedDocument(doc_id=result.doc_id, name="passport.jpg", extraction=result)


def test_passport_expiry_relative_to_today() -> None:
    today = dt.date(2026, 11, 23)
    valid = answer_document_question("When does my passport expire?", [_passport("2027-01-02")], today=today)
    assert valid is not None and "expires on 2027-01-02, in 40 days" in valid.text
    assert valid.fields_used == ["expiry_date"]
    expired = answer_document_question("is my passport still valid?", [_passport("2026-11-01")], today=today)
    assert expired is not None and "expired on 2026-11-01, 22 days ago" in expired.text
    number = answer_document_question("what's my passport number?", [_passport("2027-01-02")], today=today)
    assert number is not None and "L898902C3" not in number.text and "02C3" in number.text


def test_policy_questions_are_left_to_retrieval() -> None:
    passport = _passport("2030-01-01")
    assert answer_document_question("What is the daily ATM withdrawal limit?", [passport]) is None
    assert answer_document_question("How do I reset my online banking password?", [passport]) is None
    # About a statement, with only a passport uploaded: nothing to compute it from, so retrieval answers.
    assert answer_document_question("what was my largest debit last month?", [passport]) is None
    # With nothing uploaded, a rule asked about a statement is the KB's, a statement's figure needs the upload.
    rule = answer_document_question("how many days do I have to tell the bank about an error on my statement", [])
    assert rule is None
    figure = answer_document_question("what was the closing balance on my statement", [])
    assert figure is not None and "upload" in figure.text


@pytest.mark.parametrize(
    ("question", "asks_for_upload"),
    [
        ("When does my passport expire?", True),
        ("has my ID expired?", True),
        ("what's the expiry date on my passport", True),
        # The customer states the expiry and asks the policy: the KB answers, not a request to upload.
        ("my passport expired a couple weeks ago, can i still use it as ID to open an acount?", False),
    ],
)
def test_expiry_without_an_uploaded_id_asks_for_it_only_when_the_question_is_about_the_document(question, asks_for_upload):
    answer = answer_document_question(question, [])
    assert (answer is not None and "Please upload your passport" in answer.text) is asks_for_upload


def _westpac(corpus: Path) -> UploadedDocument:
    from ingest.extract import extract

    rel = "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf"
    result = extract(corpus / "statements" / rel)
    return UploadedDocument(doc_id=result.doc_id, name=Path(rel).name, extraction=result)


def _row_y(pdf: Path, page: int, text: str) -> float:
    import pymupdf

    with pymupdf.open(pdf) as doc:
        (hit,) = doc[page - 1].search_for(text)
    return (hit.y0 + hit.y1) / 2


def test_statement_answers_cite_the_rows_they_used(statement, corpus: Path) -> None:
    upload, truth = statement
    answer = answer_document_question("What was my largest debit?", [upload])
    largest = min(upload.extraction.transactions, key=lambda t: Decimal(t.amount))
    (citation,) = answer.citations
    assert citation.page == largest.page and citation.boxes == [largest.bbox]
    # The box is on the row that holds the cited description, not elsewhere on the page.
    y = _row_y(corpus / "statements" / STATEMENTS[_name(upload)], largest.page, largest.description.split()[0] + " " + largest.description.split()[1])
    assert citation.boxes[0].y0 <= y <= citation.boxes[0].y1
    total = answer_document_question("How much did I spend in total?", [upload])
    outlined = [b for c in total.citations for b in c.boxes]
    debits = [t for t in upload.extraction.transactions if Decimal(t.amount) < 0]
    assert len(outlined) == len(debits) and all(t.bbox in outlined for t in debits)


def _name(upload: UploadedDocument) -> str:
    return next(k for k, v in STATEMENTS.items() if Path(v).name == upload.name)


def test_balance_on_a_date_outlines_its_row(corpus: Path) -> None:
    upload = _westpac(corpus)
    answer = answer_document_question("what was my balance on 19 April?", [upload])
    assert answer is not None and "6,954.75" in answer.text
    (citation,) = answer.citations
    y = _row_y(corpus / "statements" / "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf", 1, "TRANSFER TO LOAN")
    assert len(citation.boxes) == 1 and citation.boxes[0].y0 <= y <= citation.boxes[0].y1


def test_a_guessed_currency_is_qualified_not_stated_as_fact(corpus: Path) -> None:
    upload = _westpac(corpus)  # prints "$" only; NZ shows just in its phone/account formats
    answer = answer_document_question("What was my largest debit?", [upload], uncertain_below=0.7)
    assert "NZD 950.00 (currency not certain: NZD was guessed from the $ sign" in answer.text
    assert "USD" not in answer.text
    # Stated once, by the first amount, not after every figure.
    reconcile = answer_document_question("does my statement reconcile?", [upload], uncertain_below=0.7)
    assert reconcile.text.count("currency not certain") == 1
    # With a lower bar the same guess is confident enough to state plainly.
    plain = answer_document_question("What was my largest debit?", [upload], uncertain_below=0.5)
    assert "not certain" not in plain.text and "NZD 950.00" in plain.text


def test_a_confident_statement_has_no_caveat(statement) -> None:
    upload, _ = statement
    answer = answer_document_question("What was my closing balance?", [upload], uncertain_below=0.7)
    assert answer is not None and "not certain" not in answer.text


def test_a_corrected_balance_is_judged_again(statement) -> None:
    from ingest.extract import recheck

    upload, _ = statement
    result = upload.extraction.model_copy(deep=True)
    result.fields["closing_balance"] = Field(name="closing_balance", value="not a number", page=1, confidence=1.0, source="user")
    recheck(result)
    again = UploadedDocument(doc_id=upload.doc_id, name=upload.name, extraction=result)
    answer = answer_document_question("does my statement reconcile?", [again])
    assert answer.text.startswith("I can't check") and "'not a number' is not an amount" in answer.text
