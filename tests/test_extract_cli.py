"""`docteller extract` and the bad-input contract of `ingest.extract.extract`."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from ingest.extract import extract, read_pages
from ingest.sniff import IngestError

runner = CliRunner()


def _app():
    from docteller.cli import app

    return app


def test_cli_json_statement(corpus):
    path = corpus / "statements" / "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf"
    out = runner.invoke(_app(), ["extract", str(path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["doc_type"] == "statement"
    assert set(data["fields"]["opening_balance"]) == {"value", "confidence", "page", "bbox"}
    assert data["checks"]["balance_reconciles"]["ok"] is True
    assert len(data["transactions"]) == 5
    assert "0890123" not in out.output  # the account number never appears whole


def test_cli_human_table(corpus):
    path = corpus / "statements" / "bank_statement_ocr_nz/asb_everyday_pdf_sample.pdf"
    out = runner.invoke(_app(), ["extract", str(path), "--type", "statement"])
    assert out.exit_code == 0, out.output
    assert "Transactions (5)" in out.output and "balance_reconciles" in out.output


def test_cli_bad_file_exit_code(tmp_path):
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    out = runner.invoke(_app(), ["extract", str(empty)])
    assert out.exit_code == 1
    assert "empty.pdf: empty file (0 bytes)" in out.output


def test_truncated_image(tmp_path, corpus):
    data = (corpus / "ids" / "passporteye" / "tests_data" / "passport-td3.jpg").read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(IngestError, match="corrupt or truncated image"):
        extract(bad)


def test_decompression_bomb(tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb, optimize=True)
    with pytest.raises(IngestError, match="too large"):
        extract(bomb)


def test_encrypted_pdf(tmp_path):
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Opening balance 1.00")
    path = tmp_path / "locked.pdf"
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="o", user_pw="u")
    with pytest.raises(IngestError, match="encrypted"):
        extract(path)


def test_huge_pdf_refused_fast(tmp_path):
    import pymupdf

    doc = pymupdf.open()
    for _ in range(2000):
        doc.new_page(width=100, height=100)
    path = tmp_path / "huge.pdf"
    doc.save(path)
    start = time.perf_counter()
    with pytest.raises(IngestError, match="too many pages"):
        extract(path)
    assert time.perf_counter() - start < 10


def test_image_that_is_not_a_document(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = (rng.random((300, 400, 3)) * 40 + 100).astype(np.uint8)
    path = tmp_path / "wall.png"
    Image.fromarray(noise).save(path)
    result = extract(path)
    assert result.doc_type == "unknown"
    assert any(w.startswith("no fields found:") for w in result.warnings)


def test_upload_bytes_and_read_pages(corpus):
    path = corpus / "statements" / "bank_statement_ocr_nz/anz_everyday_pdf_sample.pdf"
    result = extract(path, data=path.read_bytes(), name="upload.pdf")
    assert result.source == "upload.pdf" and len(result.transactions) == 6
    pages = read_pages(path)
    assert pages[0].number == 1 and "Kauri Bank" in pages[0].text and not pages[0].ocr_used


def test_unknown_doc_type_rejected(corpus):
    with pytest.raises(ValueError):
        extract(corpus / "statements" / "bank_statement_ocr_nz/anz_everyday_pdf_sample.pdf", "tax-return")


def test_logs_never_hold_full_account_numbers(corpus, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        result = extract(corpus / "statements" / "bank_statement_ocr_nz/tutorial_everyday_statement.pdf")
    assert result.fields["account_number"].sensitive
    assert "statement: 12 transactions" in caplog.text
    assert "0567890" not in caplog.text and "02-1234" not in caplog.text


def _card_photo(tmp_path, lines: list[str]):
    """A residence-permit-style card with printed labels and no MRZ, as a PNG photo.

    The corpus has no MRZ-less ID specimen, so the card is rendered: PyMuPDF draws the text in
    Helvetica and rasterises it, and the photo is then read by OCR like any upload."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=340, height=215)  # ID-1 card proportions, in points
    page.draw_rect(page.rect, color=(0.2, 0.3, 0.6), width=3)
    for i, line in enumerate(lines):
        page.insert_text((18, 34 + 22 * i), line, fontsize=11 if i else 13, fontname="helv")
    path = tmp_path / "card.png"
    page.get_pixmap(dpi=200).save(path)
    doc.close()
    return path


def test_id_card_without_mrz_gives_labelled_fields_with_confidence(tmp_path):
    card = _card_photo(tmp_path, [
        "REPUBLIC OF UTOPIA - RESIDENCE CARD",
        "Surname: OKAFOR",
        "Given names: CHIDI AMARA",
        "Date of birth: 14.07.1990",
        "Document No: RC4471902",
        "Date of expiry: 30.06.2031",
    ])
    result = extract(card, "auto")
    assert result.doc_type == "id"
    values = {name: f.value for name, f in result.fields.items()}
    assert values["surname"] == "OKAFOR" and values["given_names"] == "CHIDI AMARA"
    assert values["date_of_birth"] == "1990-07-14" and values["expiry_date"] == "2031-06-30"
    assert values["document_number"] == "RC4471902"
    assert all(f.source == "visual" and 0 < f.confidence < 1 and f.bbox is not None for f in result.fields.values())
    assert any("no MRZ" in w for w in result.warnings)  # no check digits could verify them
    assert result.checks["expired"].ok


def test_id_card_label_value_of_the_wrong_type_is_left_out_not_guessed(tmp_path):
    card = _card_photo(tmp_path, [
        "REPUBLIC OF UTOPIA - RESIDENCE CARD",
        "Surname: OKAFOR",
        "Date of birth: 14.07.1990",
        "Date of expiry: see reverse",
    ])
    result = extract(card, "auto")
    assert result.value("date_of_birth") == "1990-07-14" and "expiry_date" not in result.fields
    assert "expired" not in result.checks  # no expiry read: nothing to judge, nothing invented
    assert any("printed expiry date not read: 'see reverse' is not a date" in w for w in result.warnings), result.warnings


def test_cli_checks_have_plain_labels_and_a_status(corpus):
    path = corpus / "statements" / "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf"
    data = json.loads(runner.invoke(_app(), ["extract", str(path), "--json"]).output)
    # Machine keys unchanged; each check adds the label people read and a tri-state status.
    assert data["checks"]["balance_reconciles"] == {
        "ok": True, "status": "pass", "label": "Totals reconcile", "detail": data["checks"]["balance_reconciles"]["detail"],
    }
    out = runner.invoke(_app(), ["extract", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "bank statement, 1 page," in out.output and "page(s)" not in out.output
    assert "Totals reconcile (balance_reconciles)" in out.output and "Running balance (running_balance)" in out.output
    currency = next(line for line in out.output.splitlines() if "currency" in line)
    assert "NZD" in currency and "not certain" in currency


def test_cli_passport_checks_in_plain_words(corpus):
    path = corpus / "ids" / "passporteye" / "tests_data" / "passport-td3.png"
    out = runner.invoke(_app(), ["extract", str(path)], env={"COLUMNS": "220"})
    assert out.exit_code == 0, out.output
    assert "Overall check digit" in out.output and "Sex field format" in out.output
    assert "hash" not in out.output and "genre" not in out.output
    assert "UTO is the ICAO specimen state Utopia" in out.output
