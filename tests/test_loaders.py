"""Loaders on real corpus files and on each kind of bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from docteller.model import BlockKind
from ingest.loaders import load_document
from ingest.sniff import IngestError

AGREEMENT = "kb/bank_tc_pdfs/bank_of_america_online_banking_service_agreement_2025-07-21.pdf"
SCANNED = "statements/bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"


@pytest.fixture(scope="module")
def agreement(corpus: Path):
    return load_document(corpus / AGREEMENT)


def test_pdf_text_layer_pages_headings_and_tables(agreement, corpus: Path) -> None:
    import pymupdf

    assert agreement.mime == "application/pdf" and agreement.page_count == 29
    assert len(agreement.id) == 64
    headings = [b.text for p in agreement.pages for b in p.blocks if b.kind is BlockKind.heading]
    assert "6. ACH and Wire Transfers" in headings and "G. Liability" in headings
    # Page numbers match the PDF itself.
    with pymupdf.open(corpus / AGREEMENT) as pdf:
        assert "Short Code" in pdf[21].get_text()
    rows = [b for b in agreement.page(22).blocks if b.kind is BlockKind.table_row]
    assert rows[0].table_header and rows[0].text == "Product | Short Code | Toll Free Number"
    assert "Account takeover | 56433 | 866.376.7091" in [r.text for r in rows]
    zelle = [b for b in agreement.page(13).blocks if b.kind is BlockKind.table_row]
    assert zelle[0].table_header and "Daily Limit" in zelle[0].text
    assert all(b.bbox is not None for b in agreement.page(13).blocks)
    assert not any(p.ocr_used for p in agreement.pages)
    # The bold mailing-address block set in the headings' font is content to quote, not a section
    # title over the error-resolution steps that follow it.
    assert not [h for h in headings if "P.O. Box" in h or "33622" in h or h == "Bank of America"]
    address = [b for b in agreement.page(23).blocks if "P.O. Box 25118" in b.text]
    assert address and all(b.kind is BlockKind.paragraph for b in address)


def test_pdf_bold_contact_lines_are_not_headings(tmp_path: Path) -> None:
    import pymupdf

    path = tmp_path / "notice.pdf"
    with pymupdf.open() as pdf:
        page = pdf.new_page()
        y = 72
        for text, font in [("4. Lost cards", "hebo"), ("Report a lost card at once.", "helv"),
                           ("Card Services 1-800-555-0199", "hebo"), ("Northwind Bank, PO Box 4410", "hebo"),
                           ("Springfield, IL 62704-4410", "hebo"), ("Fee schedule 2025-2026", "hebo"),
                           ("Replacement cards are free of charge.", "helv")]:
            page.insert_text((72, y), text, fontname=font, fontsize=11)
            y += 30
        pdf.save(path)
    blocks = load_document(path).page(1).blocks
    kinds = {b.text: b.kind for b in blocks}
    assert kinds["4. Lost cards"] is BlockKind.heading and kinds["Fee schedule 2025-2026"] is BlockKind.heading
    for content in ("Card Services 1-800-555-0199", "Northwind Bank, PO Box 4410", "Springfield, IL 62704-4410"):
        assert kinds[content] is BlockKind.paragraph, content


def test_scanned_pdf_falls_back_to_ocr(corpus: Path) -> None:
    doc = load_document(corpus / SCANNED)
    assert all(p.ocr_used and p.ocr_engine == "rapidocr" for p in doc.pages)
    text = doc.text
    assert "Kowhai" in text
    for amount in ("1,250.00", "2,716.50", "3,200.00"):
        assert amount in text
    # Boxes are in PDF points like text-layer pages (A4 ≈ 595 × 842).
    boxes = [b.bbox for b in doc.pages[0].blocks if b.bbox]
    assert boxes and max(b.x1 for b in boxes) <= doc.pages[0].width + 1


def test_markdown_headings_and_paragraphs(corpus: Path) -> None:
    doc = load_document(corpus / "kb/us_code/efta_15usc1693.md")
    assert doc.mime == "text/markdown" and doc.title.startswith("Electronic Fund Transfer Act")
    blocks = doc.pages[0].blocks
    levels = {b.text: b.heading_level for b in blocks if b.kind is BlockKind.heading}
    assert levels["§\u202f1693f. Error resolution"] == 4
    assert any("ten business days" in b.text for b in blocks if b.kind is BlockKind.paragraph)
    assert not any("<!--" in b.text for b in blocks)


def test_markdown_table_rows(tmp_path: Path) -> None:
    md = tmp_path / "fees.md"
    md.write_text("# Fees\n\n| Service | Fee |\n|---|---|\n| Wire out | $30 |\n| Stop payment | $35 |\n\n- item one\n")
    doc = load_document(md)
    rows = [b for b in doc.pages[0].blocks if b.kind is BlockKind.table_row]
    assert [r.text for r in rows] == ["Service | Fee", "Wire out | $30", "Stop payment | $35"]
    assert rows[0].table_header and not rows[1].table_header
    assert any(b.kind is BlockKind.list_item and b.text == "item one" for b in doc.pages[0].blocks)


def test_plain_text_headings_and_wrapped_list_items(tmp_path: Path) -> None:
    txt = tmp_path / "travel.txt"
    txt.write_text(
        "CEDAR VALLEY SAVINGS BANK\n"
        "TRAVEL MONEY - CUSTOMER SHEET\n"
        "Revised January 2026\n"
        "\n"
        "1. ORDERING FOREIGN CURRENCY\n"
        "\n"
        "Customers can order banknotes in 20\n"
        "foreign currencies.\n"
        "\n"
        "  - Order online or in any branch.\n"
        "  - Minimum order: $100. Maximum: $5,000 per customer per\n"
        "    day.\n"
        "\n"
        "Fees\n"
        "====\n"
        "\n"
        "There is no commission.\n"
    )
    doc = load_document(txt)
    blocks = [(b.kind, b.heading_level, b.text) for b in doc.pages[0].blocks]
    assert blocks == [
        (BlockKind.heading, 1, "CEDAR VALLEY SAVINGS BANK — TRAVEL MONEY - CUSTOMER SHEET"),
        (BlockKind.paragraph, None, "Revised January 2026"),
        (BlockKind.heading, 2, "1. ORDERING FOREIGN CURRENCY"),
        (BlockKind.paragraph, None, "Customers can order banknotes in 20 foreign currencies."),
        (BlockKind.list_item, None, "Order online or in any branch."),
        (BlockKind.list_item, None, "Minimum order: $100. Maximum: $5,000 per customer per day."),
        (BlockKind.heading, 1, "Fees"),
        (BlockKind.paragraph, None, "There is no commission."),
    ]
    assert doc.title == "CEDAR VALLEY SAVINGS BANK — TRAVEL MONEY - CUSTOMER SHEET"
    from ingest.chunking import chunk_document

    limits = next(c for c in chunk_document(doc) if "$5,000" in c.text)
    assert limits.heading_path[-1] == "1. ORDERING FOREIGN CURRENCY"


def test_faq_csv_one_block_per_row(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "kb/bankfaqs/BankFAQs.csv"
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[:21]
    subset = tmp_path / "faq.csv"
    with open(subset, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    doc = load_document(subset)
    assert doc.metadata["faq"] is True
    blocks = doc.pages[0].blocks
    assert len(blocks) == 20
    assert blocks[1].text.startswith("Q: What details are required when I want to perform a secure IVR transaction")
    assert "\nA: To perform a secure IVR transaction" in blocks[1].text and "Class: security" in blocks[1].text


def test_html_drops_boilerplate_keeps_headings_and_rows(tmp_path: Path) -> None:
    page = tmp_path / "branches.html"
    page.write_text(
        "<html><head><title>Branches</title><script>var x=1;</script><style>p{}</style></head><body>"
        "<nav><a href='/'>Home</a> Login</nav><main><h1>Branch hours</h1><p>We open at nine.</p>"
        "<table><tr><th>Branch</th><th>Hours</th></tr><tr><td>Riverside</td><td>9-5</td></tr></table></main>"
        "<footer>Copyright cookie banner</footer></body></html>"
    )
    doc = load_document(page)
    text = doc.text
    assert doc.title == "Branches"
    assert "Login" not in text and "var x" not in text and "Copyright" not in text
    kinds = [(b.kind, b.text) for b in doc.pages[0].blocks]
    assert (BlockKind.heading, "Branch hours") in kinds
    assert (BlockKind.table_row, "Riverside | 9-5") in kinds


def test_html_source_line_breaks_are_spaces(tmp_path: Path) -> None:
    page = tmp_path / "branches.html"
    page.write_text(
        "<html><body><main><p>Mortgage loan officers are at\nthe Main Office and, by appointment,\n"
        "at the Northgate Branch.</p><pre>line one\nline two</pre></main></body></html>"
    )
    texts = [b.text for b in load_document(page).pages[0].blocks]
    assert texts == [
        "Mortgage loan officers are at the Main Office and, by appointment, at the Northgate Branch.",
        "line one\nline two",
    ]


def test_docx_headings_by_style_and_tables(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Overdraft policy", level=1)
    d.add_paragraph("We charge at most three overdraft fees a day.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Item", "Fee"
    table.cell(1, 0).text, table.cell(1, 1).text = "Overdraft", "$32"
    path = tmp_path / "policy.docx"
    d.save(path)
    doc = load_document(path)
    blocks = doc.pages[0].blocks
    assert blocks[0].kind is BlockKind.heading and blocks[0].heading_level == 1
    assert [b.text for b in blocks if b.kind is BlockKind.table_row] == ["Item | Fee", "Overdraft | $32"]


def test_xlsx_faq_sheet(tmp_path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Cards"
    ws.append(["Category", "Customer question", "Our answer"])
    ws.append(["cards", "How do I block my card?", "Call us or use the app."])
    path = tmp_path / "faq.xlsx"
    wb.save(path)
    doc = load_document(path)
    assert doc.metadata["faq"] is True
    assert "Q: How do I block my card?\nA: Call us or use the app." in doc.text


def test_multiframe_tiff_is_pages(corpus: Path, tmp_path: Path) -> None:
    import pymupdf
    from PIL import Image

    with pymupdf.open(corpus / SCANNED) as pdf:
        pix = pdf[0].get_pixmap(dpi=110, clip=pymupdf.Rect(0, 0, 595, 200))
    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    path = tmp_path / "scan.tiff"
    img.save(path, save_all=True, append_images=[img.rotate(0)])
    doc = load_document(path)
    assert doc.mime == "image/tiff" and doc.page_count == 2
    assert all("Kowhai" in p.text for p in doc.pages)


# --- bad inputs -----------------------------------------------------------------------------




@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, make_bad_files) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, make_bad_files(folder)


def test_each_bad_file_fails_with_file_and_reason(bad_files) -> None:
    folder, expected = bad_files
    for name, reason in expected.items():
        with pytest.raises(IngestError) as info:
            load_document(folder / name)
        assert info.value.path.endswith(name)
        assert reason in info.value.reason, (name, info.value.reason)
        assert str(info.value).startswith(name)


def test_wrong_extension_pdf_named_png_is_read_as_pdf(corpus: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "agreement.png"
    shutil.copy(corpus / "kb/us_code/../bank_tc_pdfs" / Path(AGREEMENT).name, disguised)
    doc = load_document(disguised)
    assert doc.mime == "application/pdf" and doc.page_count == 29


def test_table_headers_are_cut_at_the_body_columns_and_ligatures_expanded() -> None:
    """The bundled fee schedule's header cells carry per-word rules ("Online | / | mobile"), and its
    mortgage table prints "ﬁxed" with a ligature code point: both would break quoting and search."""
    from docteller.settings import DEFAULT_KB_DIR

    headers = {}
    texts = []
    for name in ("fee-schedule.pdf", "loans-and-mortgages.pdf"):
        for page in load_document(DEFAULT_KB_DIR / name).pages:
            for block in page.blocks:
                texts.append(block.text)
                if block.table_header:
                    headers.setdefault(name, []).append(block.text)
    assert "Service | Online / mobile | At a branch" in headers["fee-schedule.pdf"]
    assert "Product | Indicative APR range | Minimum down payment" in headers["loans-and-mortgages.pdf"]
    assert any("30-year fixed" in t for t in texts) and not any("ﬁ" in t for t in texts)
    # A cell's word hyphenated across lines is one word again ("non-" / "customers").
    assert "Coin counting | Free for customers; 5% of the total for non-customers" in texts


def test_pdf_bulleted_lines_in_one_text_block_are_items_of_their_own(tmp_path: Path) -> None:
    """A PDF writer that sets a bulleted list as one text block: each "•" line starts a list item
    (a wrapped item's next line stays with it), so each is a unit quoted alone."""
    import pymupdf

    path = tmp_path / "basics.pdf"
    with pymupdf.open() as pdf:
        page = pdf.new_page()
        page.insert_text((72, 72), "Card basics", fontname="hebo", fontsize=14)
        page.insert_text((72, 110), "\n".join([
            "• Replacement cards are free of charge.",
            "• A rush delivery costs $25 and arrives in two",
            "business days.",
            "• Temporary cards are valid for 30 days.",
        ]), fontname="helv", fontsize=11)
        pdf.save(path)
    blocks = load_document(path).page(1).blocks
    items = [b.text[1:].strip() for b in blocks if b.kind is BlockKind.list_item]  # the font's bullet glyph cut
    assert items == ["Replacement cards are free of charge.",
                     "A rush delivery costs $25 and arrives in two business days.",
                     "Temporary cards are valid for 30 days."]
