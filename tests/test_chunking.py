"""Structure-aware chunking on the real agreement PDF and statute Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from docteller.model import BlockKind, Document, Page, TextBlock
from ingest.chunking import chunk_document
from ingest.loaders import load_document

AGREEMENT = "kb/bank_tc_pdfs/bank_of_america_online_banking_service_agreement_2025-07-21.pdf"


@pytest.fixture(scope="module")
def agreement(corpus: Path) -> Document:
    return load_document(corpus / AGREEMENT)


@pytest.fixture(scope="module")
def statute(corpus: Path) -> Document:
    return load_document(corpus / "kb/us_code/efta_15usc1693.md")


def test_chunks_respect_size_and_know_their_place(agreement: Document) -> None:
    chunks = chunk_document(agreement, size=700, overlap=100)
    assert len(chunks) > 29
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.id == f"{agreement.id[:16]}:{c.ordinal}" and c.doc_id == agreement.id
        assert c.title == agreement.title and c.source == agreement.source and c.doc_type == "pdf"
        assert 1 <= c.page_start <= c.page_end <= 29
        assert len(c.text) <= 700 + 200, c.text  # one unsplittable table row may overflow a little
        page_text = agreement.page(c.page_start).text
        # char offsets point at the chunk's first own text on its first page
        assert c.char_end <= len(page_text) and c.char_start < c.char_end
        assert c.bbox is not None
    wire = [c for c in chunks if "$45.00 for wire transfers sent in US Dollar" in c.text]
    assert wire and wire[0].page_start == 16
    assert "6. ACH and Wire Transfers" in wire[0].heading_path


def test_offsets_locate_chunk_text_on_page(statute: Document) -> None:
    page_text = statute.pages[0].text
    for c in chunk_document(statute, size=600, overlap=0):
        first_line = c.text.split("\n")[0]
        assert page_text[c.char_start : c.char_start + len(first_line)] == first_line


def test_heading_path_and_section_boundaries(statute: Document) -> None:
    chunks = chunk_document(statute, size=900, overlap=120)
    error = [c for c in chunks if c.heading_path[-2:] == ["§\u202f1693f. Error resolution", "(c) Provisional recredit of consumer’s account"]]
    assert error, "the chunk for 1693f(c) carries its section and subsection headings"
    assert "provisionally recredit" in error[0].text
    assert error[0].embedding_text().startswith("Electronic Fund Transfer Act")
    # No chunk mixes two subsections: a heading only ever opens a chunk.
    for c in chunks:
        lines = c.text.split("\n")
        body_seen = False
        for line in lines:
            if line in c.heading_path:
                assert not body_seen, c.text[:200]
            else:
                body_seen = True


def _table_doc(rows: int) -> Document:
    blocks = [TextBlock(text="Fee schedule", kind=BlockKind.heading, heading_level=1)]
    header = TextBlock(text="Service | Fee | Notes", kind=BlockKind.table_row, table_id="t1", table_header=True)
    blocks.append(header)
    for i in range(rows):
        blocks.append(TextBlock(text=f"Service {i} | ${i}.00 | applies to personal accounts only", kind=BlockKind.table_row, table_id="t1"))
    return Document(id="f" * 64, source="fees.md", title="Fees", mime="text/markdown", pages=[Page(number=1, blocks=blocks)])


def test_table_rows_never_split_and_header_repeated() -> None:
    doc = _table_doc(40)
    chunks = chunk_document(doc, size=300, overlap=50)
    assert len(chunks) > 3
    seen = []
    for c in chunks:
        lines = c.text.split("\n")
        assert "Service | Fee | Notes" in lines, c.text
        rows = [line for line in lines if line.startswith("Service ") and line != "Service | Fee | Notes"]
        assert all(line.endswith("applies to personal accounts only") for line in rows)
        seen += rows
        assert c.heading_path == ["Fee schedule"]
    assert len(seen) == 40 and len(set(seen)) == 40  # every row once, none cut, none duplicated


def test_long_paragraph_split_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about overdraft fee rule {i}." for i in range(60)]
    doc = Document(
        id="a" * 64, source="long.txt", title="Long", mime="text/plain",
        pages=[Page(number=3, blocks=[TextBlock(text=" ".join(sentences))])],
    )
    chunks = chunk_document(doc, size=400, overlap=80)
    assert len(chunks) >= 6
    for prev, nxt in zip(chunks, chunks[1:]):
        assert len(nxt.text) <= 400
        # the start of each chunk repeats the end of the previous one
        assert nxt.text[:30] in prev.text
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)
    assert all(c.page_start == 3 for c in chunks)


def test_faq_rows_one_chunk_each(corpus: Path, tmp_path: Path) -> None:
    lines = (corpus / "kb/bankfaqs/BankFAQs.csv").read_text(encoding="utf-8").splitlines()[:31]
    path = tmp_path / "faq.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = load_document(path)
    chunks = chunk_document(doc, size=200, overlap=20)
    assert len(chunks) == len(doc.pages[0].blocks) == 30
    assert all(c.text.startswith("Q: ") and "\nA: " in c.text and c.doc_type == "faq" for c in chunks)


def test_overlap_must_be_smaller_than_size(statute: Document) -> None:
    with pytest.raises(ValueError):
        chunk_document(statute, size=100, overlap=100)
