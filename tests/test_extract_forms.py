"""Receipts (SROIE) and forms (FUNSD): key/value extraction with confidence."""

from __future__ import annotations

import json

import pytest

from ingest.extract import extract


@pytest.fixture(scope="module")
def forms_gt(corpus):
    rows = [json.loads(l) for l in (corpus / "forms" / "forms_groundtruth.jsonl").read_text().splitlines() if l.strip()]
    return {r["file"]: r for r in rows}


def test_sroie_receipt_fields(corpus, forms_gt):
    rec = forms_gt["sroie/img/006.jpg"]
    result = extract(corpus / "forms" / rec["file"], "receipt")
    assert result.doc_type == "receipt"
    assert result.value("company") == rec["fields"]["company"]
    assert result.value("date") == "2019-01-11"
    assert result.value("total") == "327.00"
    assert result.fields["date"].raw == "11/01/2019"
    assert "JALAN PUTRA" in result.value("address")
    assert all(0 < f.confidence <= 1 for f in result.fields.values())
    assert result.fields["total"].bbox is not None


def test_funsd_form_question_answer_pairs(corpus, forms_gt):
    name = next(k for k, r in forms_gt.items() if r["kind"] == "form" and len(r["fields"]) >= 5)
    result = extract(corpus / "forms" / name, "form")
    assert result.doc_type == "form"
    assert len(result.fields) >= 3
    normalise = lambda s: "".join(c for c in (s or "").upper() if c.isalnum())
    gt = {normalise(q): normalise(a.split(" | ")[0]) for q, a in forms_gt[name]["fields"].items() if a}
    got = {normalise(k): normalise(f.value) for k, f in result.fields.items()}
    matched = [q for q, a in gt.items() if q in got and got[q] and (a in got[q] or got[q] in a)]
    assert matched, (gt, got)
