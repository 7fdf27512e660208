"""Fast checks of the UI's building blocks: page rendering and highlights, the extraction tables,
safe zip unpacking for staff uploads, the staff token, upload checks and session isolation."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from docteller.model import BBox, Check, ExtractionResult, Field, Transaction
from docteller.settings import DEFAULT_KB_DIR, Settings
from ui import render
from ui.backend import SessionRegistry, TabSession, UploadRejected, check_upload
from ui.staff import ArchiveRejected, safe_unpack_zip, stage_staff_files, token_matches

FEES_PDF = DEFAULT_KB_DIR / "fee-schedule.pdf"


def _highlighted(image) -> np.ndarray:
    """Mask of pixels tinted by the yellow passage highlight."""
    a = np.asarray(image).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return (r > 200) & (g > 180) & (b < 200) & (r - b > 50)


def test_pdf_passage_is_highlighted_where_its_text_is():
    import pymupdf

    with pymupdf.open(FEES_PDF) as doc:
        page = doc[0]
        passage = "Overdraft fee (item paid when your balance is too low)"
        (hit,) = page.search_for(passage)
    image = render.render_passage(FEES_PDF, "application/pdf", title="Fees", page=1, text=passage)
    mask = _highlighted(image)
    ys, xs = np.nonzero(mask)
    assert len(ys) > 500
    # The image is cropped to the passage with an inch of context above; the highlight sits on
    # the passage's line (page points x zoom), not somewhere else.
    zoom = render.PDF_ZOOM
    top = max(0.0, hit.y0 - 72)
    assert image.height < 0.5 * 842 * zoom  # cropped: the passage is legible in a side panel
    assert abs(np.median(ys) - ((hit.y0 + hit.y1) / 2 - top) * zoom) < 15
    assert xs.min() >= hit.x0 * zoom - 10 and xs.max() <= hit.x1 * zoom + 10


def test_text_sources_render_the_passage_as_a_page_image():
    image = render.render_passage(
        None, "text/markdown", title="Identity verification", page=1, text="Bring a passport or driving licence."
    )
    assert image.width > 500 and image.height >= 200
    assert _highlighted(image).sum() > 1000  # the passage sits on a highlighted background


def test_missing_source_falls_back_to_the_passage_text(tmp_path):
    image = render.render_passage(
        tmp_path / "gone.pdf", "application/pdf", title="Gone", page=3, text="A passage whose file moved."
    )
    assert image.width > 500


def _result() -> ExtractionResult:
    return ExtractionResult(
        source="statement.pdf",
        doc_id="abc",
        doc_type="statement",
        fields={
            "account_number": Field(name="account_number", value="0212340567890000", confidence=0.9, page=1,
                                    bbox=BBox(x0=10, y0=10, x1=60, y1=20), sensitive=True),
            "closing_balance": Field(name="closing_balance", value="2716.50", confidence=0.95, page=1,
                                     bbox=BBox(x0=10, y0=30, x1=60, y1=40)),
            "account_holder": Field(name="account_holder", value="JAMIE SAMPLE", confidence=0.4, page=1),
        },
        checks={
            "balance_reconciles": Check(name="balance_reconciles", ok=False,
                                        detail="opening + credits - debits != closing_balance"),
            "running_balance": Check(name="running_balance", ok=True, detail="all rows consistent"),
        },
        transactions=[
            Transaction(date="2026-05-02", description="COFFEE", amount="-5.50", balance="1244.50", row_ok=True),
            Transaction(date="2026-05-03", description="SALARY", amount="3200.00", balance="9999.99", row_ok=False),
        ],
    )


def test_fields_table_masks_numbers_and_flags_problems():
    html = render.fields_html(_result())
    assert "0212340567890000" not in html and "************0000" in html
    # closing_balance is named by a failed check: its row is marked; a low-confidence row is amber.
    closing_row = next(row for row in html.split("<tr") if "data-field='closing_balance'" in row)
    holder_row = next(row for row in html.split("<tr") if "data-field='account_holder'" in row)
    # The failed check is named as a person reads it, not by its key (`balance_reconciles`).
    assert "dt-bad" in closing_row and "fails: Totals reconcile" in closing_row
    assert "dt-warn" in holder_row


def test_checks_list_failures_first_and_transactions_mark_balance_breaks():
    checks = render.checks_html(_result())
    assert checks.index("Totals reconcile") < checks.index("Running balance")
    assert "1 failed" in checks
    transactions = render.transactions_html(_result())
    rows = transactions.split("<tr")
    salary = next(r for r in rows if "SALARY" in r)
    coffee = next(r for r in rows if "COFFEE" in r)
    assert "dt-bad" in salary and "dt-bad" not in coffee
    assert "1 break the running balance" in transactions


def test_page_preview_blanks_sensitive_numbers_and_outlines_the_selected_field():
    from PIL import Image

    page = Image.new("RGB", (100, 60), "white")
    boxes = render.field_boxes(_result(), page=1, selected="closing_balance")
    image = np.asarray(render.draw_boxes(page, boxes)).astype(int)
    account = image[12:18, 15:55]  # inside the account number's box: opaque
    assert (np.abs(account - np.array(render.REDACT_FILL[:3])) < 3).all()
    closing_edge = image[30 - 2, 20]  # the selected field's outline is red
    assert closing_edge[0] > 180 and closing_edge[1] < 90


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_zip_unpacking_refuses_traversal_and_junk(tmp_path):
    archive = tmp_path / "kb.zip"
    archive.write_bytes(_zip({
        "policies/fees.md": b"# Fees\n",
        "../outside.md": b"escape",
        "/etc/absolute.md": b"escape",
        "__MACOSX/._fees.md": b"junk",
        "policies/.hidden": b"junk",
    }))
    dest = tmp_path / "out"
    dest.mkdir()
    written = safe_unpack_zip(archive, dest, max_total_bytes=1 << 20)
    assert [p.relative_to(dest).as_posix() for p in written] == ["policies/fees.md"]
    assert not (tmp_path / "outside.md").exists()


def test_zip_unpacking_stops_at_the_size_cap_even_if_headers_lie(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"a.txt": b"0" * 200_000, "b.txt": b"0" * 200_000}))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRejected, match="bomb.zip.*size cap"):
        safe_unpack_zip(archive, dest, max_total_bytes=300_000)


def test_staging_reports_unreadable_files_and_unpacks_zips(tmp_path):
    settings = Settings(home=tmp_path / "home", max_upload_mb=1)
    good = tmp_path / "faq.md"
    good.write_text("# FAQ\nQ and A.\n")
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"\x00\x01binary that is not a PDF")
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(_zip({"a/one.md": b"# One\n", "a/two.md": b"# Two\n"}))
    staged = stage_staff_files([good, fake, bundle], tmp_path / "work", settings)
    # Each file is named as staff named it (zip members by their path inside the zip), whatever
    # it is called on disk.
    assert sorted(staged.names[p] for p in staged.paths) == ["a/one.md", "a/two.md", "faq.md"]
    (rejected,) = staged.rejected
    assert rejected[0] == "report.pdf" and rejected[1] == "failed" and "report.pdf" in rejected[2]


def test_staff_token_comparison():
    assert token_matches(Settings(staff_token="s3cret"), "s3cret")
    assert not token_matches(Settings(staff_token="s3cret"), "s3cre")
    assert not token_matches(Settings(staff_token="s3cret"), None)
    assert not token_matches(Settings(staff_token=None), "")  # no token configured: never open


def test_customer_uploads_are_checked_by_content_and_size(tmp_path):
    settings = Settings(home=tmp_path, max_upload_mb=1)
    renamed = tmp_path / "passport.jpg"
    renamed.write_text("hello, not an image")
    with pytest.raises(UploadRejected) as refused:
        check_upload(renamed, "passport.jpg", settings, {"image/jpeg"})
    assert "passport.jpg" in str(refused.value) and refused.value.kind == "unsupported"
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * (2 * 1024 * 1024))
    with pytest.raises(UploadRejected, match="too large") as too_big:
        check_upload(big, "big.pdf", settings, {"application/pdf"})
    assert too_big.value.kind == "too_large"
    assert check_upload(FEES_PDF, "fees.pdf", settings, {"application/pdf"}) == "application/pdf"


class _Agent:
    """Minimal stand-in for an agent session: the registry never calls into it."""


def test_session_registry_keeps_tabs_apart_and_evicts_the_oldest(tmp_path):
    registry = SessionRegistry(
        lambda key, group: TabSession(key=key, agent=_Agent(), upload_dir=tmp_path / key), max_sessions=2,
        protect_s=0.0,
    )
    a, b = registry.get("tab-a"), registry.get("tab-b")
    assert a is not b and registry.get("tab-a") is a
    a.upload_dir.mkdir()
    registry.get("tab-c")  # over the cap: the least recently used ("tab-b") goes
    assert registry.peek("tab-b") is None and registry.peek("tab-a") is a
    registry.drop("tab-a")
    assert registry.peek("tab-a") is None and not a.upload_dir.exists()  # its files are deleted
    assert len(registry) == 1


def test_a_full_registry_refuses_new_sessions_rather_than_evict_active_ones(tmp_path):
    from ui.backend import SessionLimit

    registry = SessionRegistry(
        lambda key, group: TabSession(key=key, agent=_Agent(), upload_dir=tmp_path / key, group=group),
        max_sessions=2, protect_s=600.0, default_group_cap=1,
    )
    live = registry.get("live")
    registry.get("other")
    with pytest.raises(SessionLimit):
        registry.get("newcomer")  # both were active within the protect window
    assert registry.peek("live") is live
    # A busy session is never evicted, however old its last activity.
    live.last_used -= 3600
    with live.lock:
        registry.get("other").last_used -= 3600
        registry.get("newcomer-2")
    assert registry.peek("live") is live and registry.peek("other") is None
    # An API key's conversations are capped within that key only.
    per_key = SessionRegistry(
        lambda key, group: TabSession(key=key, agent=_Agent(), upload_dir=tmp_path / key, group=group),
        max_sessions=10, protect_s=600.0, default_group_cap=1,
    )
    per_key.get("api-1", group="key-a")
    with pytest.raises(SessionLimit):
        per_key.get("api-2", group="key-a")
    assert per_key.get("api-3", group="key-b") is not None


# --- Checks a customer can trust, and statement answers that outline their rows ----------------

WESTPAC = "bank_statement_ocr_nz/westpac_everyday_pdf_sample.pdf"


@pytest.fixture(scope="module")
def westpac(corpus):
    from ingest.extract import extract

    return extract(corpus / "statements" / WESTPAC)


def test_checks_panel_shows_plain_names_and_a_neutral_not_read():
    result = _result()
    result.checks["visual_expiry_date"] = Check(
        name="visual_expiry_date", ok=None, detail="printed expiry date not read: 'Valide jusqu'au' is not a date"
    )
    html = render.checks_html(result)
    row = next(r for r in html.split("<tr") if "data-check='visual_expiry_date'" in r)
    assert "Printed expiry date vs MRZ" in row and "not read" in row
    assert "✓" not in row and "✗" not in row and "dt-bad" not in row
    assert "1 passed" in html and "1 failed" in html and "1 not read" in html
    # Failures first, then what could not be checked, then passes.
    assert html.index("Totals reconcile") < html.index("Printed expiry date") < html.index("Running balance")
    # A check that could not be made flags no field as failing.
    assert "expiry_date" not in render.field_problems(result)


def test_a_guessed_currency_is_marked_uncertain_in_the_fields_table(westpac):
    html = render.fields_html(westpac)
    rows = {r.split("data-field='")[1].split("'")[0]: r for r in html.split("<tr") if "data-field='" in r}
    assert "dt-uncertain" in rows["currency"] and "not certain (guessed with 60% confidence)" in rows["currency"]
    assert all("dt-uncertain" not in r for name, r in rows.items() if name != "currency")
    summary = render.extraction_summary("westpac.pdf", westpac)
    assert summary.startswith("I read **westpac.pdf** as a bank statement (1 page), ")
    assert "5 transactions" in summary and "Not certain, please check: currency." in summary
    assert "page(s)" not in summary


def test_summary_wording_for_an_id():
    result = ExtractionResult(source="card.jpg", doc_id="c", doc_type="id", pages=1)
    assert render.extraction_summary("card.jpg", result).startswith("I read **card.jpg** as an ID document (1 page).")
    heading = render.document_heading("card.jpg", result.model_copy(update={"pages": 2}))
    assert "ID document, 2 pages" in heading


def test_panel_after_a_correction_shows_the_rechecked_verdict(westpac):
    from ingest.extract import recheck

    result = westpac.model_copy(deep=True)
    assert "data-status='pass'" in next(r for r in render.checks_html(result).split("<tr") if "balance_reconciles" in r)
    result.fields["closing_balance"] = Field(name="closing_balance", value="7000.00", confidence=1.0, source="user")
    recheck(result)
    row = next(r for r in render.checks_html(result).split("<tr") if "balance_reconciles" in r)
    assert "data-status='fail'" in row and "✗ fail" in row and "difference 457.55" in row
    fields = render.fields_html(result)
    assert "corrected by you" in next(r for r in fields.split("<tr") if "data-field='closing_balance'" in r)


def test_a_correction_the_printed_zone_contradicts_shows_both():
    result = ExtractionResult(source="p.jpg", doc_id="p", doc_type="passport")
    result.fields["given_names"] = Field(name="given_names", value="ANNA MARIE", confidence=1.0, source="user")
    result.checks["visual_given_names"] = Check(
        name="visual_given_names", ok=False, detail="the printed zone and the MRZ disagree: printed 'ANNA MARIA', MRZ 'ANNA MARIE'"
    )
    row = next(r for r in render.fields_html(result).split("<tr") if "data-field='given_names'" in r)
    assert "dt-bad" in row and "corrected by you; fails: Printed given names vs MRZ" in row


def _green(image) -> np.ndarray:
    a = np.asarray(image).astype(int)
    edge = np.array(render.ROW_EDGE[:3])
    return (np.abs(a - edge) < 40).all(axis=-1)


def test_statement_answer_preview_outlines_the_row_it_used(corpus, westpac):
    import pymupdf
    from types import SimpleNamespace

    from agent.doc_answers import answer_document_question
    from docteller.model import Citation, UploadedDocument
    from ui.chat import citation_preview

    pdf = corpus / "statements" / WESTPAC
    doc = UploadedDocument(doc_id=westpac.doc_id, name="westpac.pdf", extraction=westpac, path=pdf, mime="application/pdf")
    answer = answer_document_question("What was my largest debit?", [doc])
    (cited,) = answer.citations
    # As the Sources panel receives it: the agent's Citation as a plain dict.
    citation = Citation(doc_id=cited.doc_id, title=cited.title, page=cited.page, origin="upload", boxes=cited.boxes).model_dump()
    image, caption = citation_preview(None, SimpleNamespace(uploads={westpac.doc_id: doc}), citation)
    assert "outlined" in caption
    with pymupdf.open(pdf) as d:
        (row,) = d[0].search_for("TRANSFER TO LOAN")
        (other,) = d[0].search_for("EFTPOS KOWHAI CAFE")
    # The preview is cropped around the row with an inch of context above: page y -> image y.
    top = max(0.0, cited.boxes[0].y0 - 72)
    ys, xs = np.nonzero(_green(image))
    assert len(ys) > 200
    zoom = render.PDF_ZOOM
    row_band = ((row.y0 - top) * zoom - 8, (row.y1 - top) * zoom + 8)
    assert row_band[0] <= ys.min() and ys.max() <= row_band[1]  # the outline is on that row only
    assert not ((other.y0 - top) * zoom <= np.median(ys) <= (other.y1 - top) * zoom)


def test_a_turn_shows_what_it_is_doing_before_the_first_word(tmp_path):
    """The first frame of an answer is a status line, not an empty bubble."""
    from ui.chat import _answer_turn

    class SlowAgentSession(TabSession):
        def ask_stream(self, question, cancel=None):
            raise AssertionError("the status must be shown before the agent is asked")

    session = SlowAgentSession(key="k", agent=_Agent(), upload_dir=tmp_path)
    transcript = [{"role": "user", "content": "What is the overdraft fee?"}]
    turn = _answer_turn(session, "What is the overdraft fee?", transcript, {"answer_at": {}})
    _, shown = next(turn)
    assert shown[-1] == {"role": "assistant", "content": "_Searching our policies…_"}
    assert [m["role"] for m in shown] == ["user", "assistant"]  # the question is not repeated


def test_two_chunks_of_one_page_are_one_source_in_the_api_text(two_chunks_of_one_page) -> None:
    """The agent keeps every chunk's citation (the Sources panel opens each); the API's text lists a page once."""
    from ui.api import sources_text

    text = sources_text([c.model_dump() for c in two_chunks_of_one_page.citations])
    assert text == "\n\nSources:\n[1] Schedule of Fees, p. 3\n[2] Schedule of Fees, p. 1"
