"""Receipts (SROIE): header layout, payable total and the header re-read, on real scans."""

from __future__ import annotations

import json

import pytest

from docteller.model import BBox
from docteller.protocols import OcrLine
from ingest.extract import extract
from ingest.extract.receipt import reading_order


def _norm(text: str | None) -> str:
    return "".join(c for c in (text or "").upper() if c.isalnum())


@pytest.fixture(scope="module")
def receipts_gt(corpus):
    rows = [json.loads(line) for line in (corpus / "forms" / "forms_groundtruth.jsonl").read_text().splitlines() if line.strip()]
    return {r["file"]: r["fields"] for r in rows if r["kind"] == "receipt"}


def _line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text=text, bbox=BBox(x0=x0, y0=y0, x1=x1, y1=y1), confidence=0.99)


def test_reading_order_keeps_stacked_lines_apart():
    # Boxes from receipt 017: a taller, wider line whose centre is within half a line of the
    # one above must still come after it; boxes side by side on a row stay left to right.
    upper = _line("BANDAR BUKIT RAJA, 41050", 200, 367, 620, 436)
    lower = _line("KLANG SELANGOR D.E, MALAYSIA", 163, 395, 653, 475)
    left = _line("SAM SAM TRADING", 125, 63, 593, 109)
    right = _line("CO", 601, 72, 676, 107)
    assert [p.text for p in reading_order([lower, right, upper, left])] == [left.text, right.text, upper.text, lower.text]


def test_customer_company_and_paid_total(corpus, receipts_gt):
    # 008: the billed customer ("... ENGINEERING (M) SDN BHD") is printed below the shop's
    # header; the total row reads 112.46 where cash 112.45 minus change 0.00 was paid.
    gt = receipts_gt["sroie/img/008.jpg"]
    result = extract(corpus / "forms" / "sroie/img/008.jpg", "receipt")
    assert _norm(result.value("company")) == _norm(gt["company"])
    assert _norm(result.value("address")) == _norm(gt["address"])
    assert result.value("total") == "112.45"


def test_name_split_across_boxes_and_total_without_label(corpus, receipts_gt):
    # 010: "SAM SAM TRADING" and "CO" are two OCR boxes on one row.
    result = extract(corpus / "forms" / "sroie/img/010.jpg", "receipt")
    gt = receipts_gt["sroie/img/010.jpg"]
    assert _norm(result.value("company")) == _norm(gt["company"])
    assert _norm(result.value("address")) == _norm(gt["address"])
    # 026: the "TOTAL" row is not read; "TOTAL : ..." below is the GST summary.
    result = extract(corpus / "forms" / "sroie/img/026.jpg", "receipt")
    assert result.value("total") == receipts_gt["sroie/img/026.jpg"]["total"]


def test_low_confidence_address_is_read_again(corpus, receipts_gt):
    # 014: the whole-receipt reading garbles the second address line (confidence 0.58); the
    # header read on its own gets it right.
    gt = receipts_gt["sroie/img/014.jpg"]
    result = extract(corpus / "forms" / "sroie/img/014.jpg", "receipt")
    assert _norm(result.value("address")) == _norm(gt["address"])
    assert result.fields["address"].confidence > 0.8
