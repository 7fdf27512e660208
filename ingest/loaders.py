"""File → `Document`: one backend per format, one page pipeline (`ingest.pages`).

Backends (Docling-style): PDF (text layer; scanned pages OCR'd), images (OCR), Markdown, TXT,
HTML, DOCX, CSV, XLSX. Each says whether it reads a file (`supported`) and turns it into a
`Document` (`convert`); `PageOptions` says how pages are read (OCR resolution, turning photos
upright, whether word geometry is kept for extraction). `convert` is the entry point: the
knowledge base is read with `PageOptions.for_index`, a customer's upload once with
`PageOptions.for_upload`, and that one `Document` is both indexed and extracted from.

The type is decided by content (`ingest.sniff.sniff`), never by the extension, and every file is
opened through `ingest.sniff`, so a bad input fails as an `IngestError` naming the file and reason.
Structure is kept where the format has it: headings (with levels), paragraphs, list items and
table rows (typed cells, shown joined with " | "; rows are never split by the chunker) with page
numbers.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from statistics import median
from typing import Any, ClassVar, Protocol

from docteller.model import BBox, BlockKind, Document, Page, TextBlock, sha256_bytes
from docteller.parsing.text import clean as _clean
from docteller.settings import Settings
from ingest.pages import PageOptions, Progress, ocr_page, ocr_pdf_page, text_layer_geometry
from ingest.sniff import DOCX, PDF, XLSX, IMAGE_MIMES, IngestError, open_image, open_pdf, sniff, sniff_bytes

log = logging.getLogger(__name__)

# Header names that mark the question / answer columns of a FAQ sheet (lower-cased, exact or prefix).
QUESTION_HEADERS = ("question", "questions", "q", "query", "faq", "prompt")
ANSWER_HEADERS = ("answer", "answers", "a", "response", "reply", "solution")


# Bump when a loader or the chunker changes what a file's chunks are: an index re-reads the
# documents it holds from an older version instead of keeping their stale chunks.
PARSER_VERSION = "8"  # 2: plain-text headings and list items; 3: HTML line breaks are spaces;
# 4: a PDF table cell's word broken at a line end is rejoined; 5: a numbered list's lead-in is repeated
# in each chunk of its items; a PDF paragraph's bold numbered run-in title ("7.3 Longer delays.") is a heading;
# 6: a bold or large line holding a long number (a postcode, a phone number) or a PO box is content, not a heading;
# 7: a list's lead-in is not repeated above a chunk that opens in the middle of one of its items;
# 8: a PDF text block's lines that open with a bullet glyph are list items of their own


# --- entry points ---------------------------------------------------------------------------


def load_document(
    path: str | Path, origin: str = "kb", settings: Settings | None = None, progress: Progress | None = None
) -> Document:
    """Read one knowledge-base file into a `Document` (id = sha256 of its bytes). Raises `IngestError`.
    `progress(page, pages)` is called as each page starts being read."""
    return convert(path, PageOptions.for_index(settings), origin=origin, progress=progress)


def convert(
    path: str | Path,
    options: PageOptions,
    *,
    data: bytes | None = None,
    name: str | None = None,
    origin: str = "kb",
    progress: Progress | None = None,
    require_text: bool = True,
    mimes: Iterable[str] | None = None,
) -> Document:
    """Read a file (or its `data`, shown as `name`) with the backend for its content type.

    `progress(page, pages)` is called as each page starts being read (OCR takes seconds a page).
    `mimes` limits the formats accepted; `require_text` refuses a document with no text at all.
    Raises `IngestError` naming the file and the reason."""
    label = name or str(path)
    mime = sniff_source(path, data, label)
    backend = backend_for(mime)
    if backend is None or (mimes is not None and mime not in set(mimes)):
        raise IngestError(label, f"unsupported file type ({mime})")
    data = Path(path).read_bytes() if data is None else data
    try:
        pages, metadata = backend.pages(label, data, options, progress)
    except IngestError:
        raise
    except Exception as exc:  # a parser bug or an exotic file must not take the whole run down
        log.debug("loader crashed on %s", label, exc_info=True)
        raise IngestError(label, f"could not parse {mime} ({type(exc).__name__}: {exc})") from exc
    document = Document(
        id=sha256_bytes(data),
        source=label,
        title=metadata.pop("title", None) or _title_from(pages) or Path(label).stem,
        mime=mime,
        pages=pages,
        metadata={**metadata, "parser_version": PARSER_VERSION},
        origin=origin,  # type: ignore[arg-type]
    )
    if require_text:
        ensure_text(document)
    return document


def ensure_text(document: Document) -> None:
    """`IngestError` for a document without any text (nothing to index or quote)."""
    if not any(b.text.strip() for p in document.pages for b in p.blocks):
        raise IngestError(document.source, "no text found (empty document, or OCR read nothing)")


def sniff_source(path: str | Path, data: bytes | None, label: str) -> str:
    """The content type of a file, or of its `data` when given (shown as `label`)."""
    if data is None:
        return sniff(path)
    if not data:
        raise IngestError(label, "empty file (0 bytes)")
    mime = sniff_bytes(data[:4096], label)
    if mime is None:
        raise IngestError(label, "unsupported file type (content not recognised)")
    return mime


def _title_from(pages: list[Page]) -> str | None:
    for page in pages[:2]:
        for block in page.blocks:
            if block.kind is BlockKind.heading and 3 <= len(block.text) <= 160:
                return block.text
    return None


# --- backends -------------------------------------------------------------------------------


class Backend(Protocol):
    """One file format: whether it reads a file, and its pages and metadata (title, ...)."""

    mimes: ClassVar[frozenset[str]]

    def supported(self, path: str | Path) -> bool: ...

    def pages(self, label: str, data: bytes, options: PageOptions, progress: Progress | None) -> tuple[list[Page], dict]: ...

    def convert(self, path: str | Path, options: PageOptions) -> Document: ...


class _Backend:
    mimes: ClassVar[frozenset[str]] = frozenset()

    def supported(self, path: str | Path) -> bool:
        try:
            return sniff(path) in self.mimes
        except IngestError:
            return False

    def convert(self, path: str | Path, options: PageOptions) -> Document:
        return convert(path, options, mimes=self.mimes)

    def pages(self, label: str, data: bytes, options: PageOptions, progress: Progress | None) -> tuple[list[Page], dict]:
        pages, meta = self.read(Path(label), data, options)
        for page in pages:
            if progress is not None:
                progress(page.number, len(pages))
        return pages, meta

    def read(self, path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
        """The format's pages and metadata: supplied by each `_reader` class (PDF and images
        override `pages` instead, for per-page progress while they OCR)."""
        raise NotImplementedError


# --- PDF ------------------------------------------------------------------------------------


class PdfBackend(_Backend):
    """Text-layer pages from the text layer (headings, paragraphs, ruled tables); pages with
    (almost) no text layer are scans: rendered at `ocr_dpi` and OCR'd."""

    mimes = frozenset({PDF})

    def pages(self, label: str, data: bytes, options: PageOptions, progress: Progress | None) -> tuple[list[Page], dict]:
        doc = open_pdf(label, max_pages=options.max_pages, data=data)
        try:
            pages = []
            for pdf_page in doc:
                if progress is not None:
                    progress(pdf_page.number + 1, doc.page_count)
                pages.append(_pdf_page(label, pdf_page, options))
            meta: dict[str, Any] = {"title": _clean((doc.metadata or {}).get("title") or "") or None}
            if any(p.ocr_used for p in pages):
                meta["ocr_pages"] = [p.number for p in pages if p.ocr_used]
            return pages, meta
        finally:
            doc.close()


def _pdf_page(label: str, page, options: PageOptions) -> Page:
    number = page.number + 1
    if len(page.get_text("text").strip()) < options.min_text_chars:
        try:
            return ocr_pdf_page(page, options)
        except Exception as exc:
            raise IngestError(label, f"OCR failed on page {number} ({type(exc).__name__}: {exc})") from exc
    tables = _find_grid_tables(page)
    blocks = _pdf_text_blocks(page, tables)
    for table in tables:
        blocks.extend(table)
    blocks.sort(key=lambda b: (b.bbox.y0 if b.bbox else 0.0, b.bbox.x0 if b.bbox else 0.0))
    words, lines = text_layer_geometry(page) if options.keep_words else ([], [])
    return Page(number=number, blocks=blocks, width=page.rect.width, height=page.rect.height, words=words, phrases=lines)


def _pdf_text_blocks(page, tables: list[list[TextBlock]]) -> list[TextBlock]:
    """Paragraphs and headings from the text layer, leaving out lines that belong to a table."""
    table_boxes = [_union([b.bbox for b in t if b.bbox]) for t in tables]
    raw = page.get_text("dict", flags=0)["blocks"]  # flags=0: no images, keep ligatures as text
    sizes: list[float] = []
    parsed: list[tuple[BBox, str, float, bool]] = []
    groups = []
    for block in raw:
        if block.get("type", 0) != 0:
            continue
        run_in = _run_in_heading(block)
        for n, group in enumerate(_bullet_groups(block.get("lines", []))):
            groups.append((group, run_in if n == 0 else None))
    for group, run_in in groups:
        lines: list[str] = []
        line_boxes: list[BBox] = []
        block_sizes: list[tuple[float, int]] = []
        bold_chars = 0
        total_chars = 0
        for line in group:
            lbox = BBox(x0=line["bbox"][0], y0=line["bbox"][1], x1=line["bbox"][2], y1=line["bbox"][3])
            if _inside_any(lbox, table_boxes):
                continue
            text = _line_text(line)
            if not text.strip():
                continue
            for span in line["spans"]:
                n = len(span["text"].strip())
                total_chars += n
                block_sizes.append((span["size"], n))
                if span["flags"] & 16 or "bold" in span["font"].lower():
                    bold_chars += n
            lines.append(text)
            line_boxes.append(lbox)
        if not lines:
            continue
        text = _clean(_join_lines(lines))
        if not text:
            continue
        size = max(block_sizes, key=lambda s: s[1])[0] if block_sizes else 0.0
        sizes.extend([s for s, n in block_sizes for _ in range(min(n, 50))])
        parsed.append((_union(line_boxes), text, size, total_chars > 0 and bold_chars / total_chars > 0.8, run_in))
    body = median(sizes) if sizes else 0.0
    blocks: list[TextBlock] = []
    for n, (bbox, text, size, bold, run_in) in enumerate(parsed):
        if run_in and text.startswith(run_in) and len(text) > len(run_in) + 20:
            # "7.3 Longer delays may apply. In some cases …": the numbered subsection's bold run-in
            # title is its heading, so its number and title travel with its chunks.
            blocks.append(TextBlock(text=run_in.rstrip(" .:"), kind=BlockKind.heading, heading_level=4, bbox=bbox))
            blocks.append(TextBlock(text=text[len(run_in):].strip(), kind=BlockKind.paragraph, bbox=bbox))
            continue
        # A contact line is no title, nor is the name heading an address block set in its own
        # font ("Northwind Bank" above "PO Box 4410").
        following = parsed[n + 1] if n + 1 < len(parsed) else None
        addressee = following is not None and _is_contact_detail(following[1]) and following[3] == bold \
            and abs(following[2] - size) < 0.5
        short = (len(text) <= 140 and not text.endswith((".", ",", ";", ":")) or len(text) <= 60) \
            and not _is_contact_detail(text) and not addressee
        if short and body and size >= body * 1.25:
            level = 1 if size >= body * 1.6 else 2
            blocks.append(TextBlock(text=text, kind=BlockKind.heading, heading_level=level, bbox=bbox))
        elif short and bold and size >= body * 0.98 and re.search(r"[A-Za-z]{3}", text):
            level = 2 if size >= body * 1.08 else 3  # a bold larger-than-body line ranks above a bold one
            blocks.append(TextBlock(text=text, kind=BlockKind.heading, heading_level=level, bbox=bbox))
        else:
            kind = BlockKind.list_item if re.match(r"^([•\-–·*/]|\(?[a-z0-9]{1,3}[.)])\s", text) else BlockKind.paragraph
            blocks.append(TextBlock(text=text, kind=kind, bbox=bbox))
    return blocks


# A bullet glyph opening a line ("•  Rate locks of 45 days are free."): a list item.
_GLYPH_BULLET_RE = re.compile(r"^\s*[•·●▪◦‣⁃■□◆►➢✓]\s")


def _line_text(line: dict) -> str:
    """A PyMuPDF text line's text: its spans joined."""
    return "".join(span["text"] for span in line["spans"])


def _bullet_groups(lines: list[dict]) -> list[list[dict]]:
    """A text block's lines cut before each line that opens with a bullet glyph: PDF writers
    often set a whole bulleted list as one block, and each item is its own list item (quoted
    alone, as a Markdown list's items are). A wrapped item's next lines stay with it."""
    groups: list[list[dict]] = []
    has_text = False  # the last group holds a line with text (a bullet after blank lines opens none)
    for line in lines:
        text = _line_text(line)
        if not groups or (_GLYPH_BULLET_RE.match(text) and has_text):
            groups.append([line])
            has_text = False
        else:
            groups[-1].append(line)
        has_text = has_text or bool(text.strip())
    return groups


# A run of digits and separators ("62704-4410", "1-800-555-0100", "MC-410-22-07") …
_NUMBER_RUN_RE = re.compile(r"\d[\d\-./ ]*\d")
_YEAR_RANGE_RE = re.compile(r"^(?:19|20)\d\d\s*[-/]\s*(?:(?:19|20)?\d\d)$")
_PO_BOX_RE = re.compile(r"\bP\.?\s?O\.?\s+Box\b", re.IGNORECASE)


def _is_contact_detail(text: str) -> bool:
    """A line holding a number of 5 or more digits (a postcode, a phone or reference number; a
    year range "2025-2026" aside) is content: a bold address block or phone line set in the
    headings' font is what a customer needs quoted, not the title of what follows it; so is a
    post-office box line."""
    return bool(_PO_BOX_RE.search(text)) or any(
        sum(ch.isdigit() for ch in run) >= 5 and not _YEAR_RANGE_RE.match(run)
        for run in _NUMBER_RUN_RE.findall(text)
    )


# A numbered subsection's run-in title: "7.3 Longer delays may apply." or "12(b) Notices."
_RUN_IN_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3})+\.?\s+[A-Z][^.:]{2,80}[.:]?$|^\d{1,3}\([a-z0-9]{1,3}\)\s+[A-Z][^.:]{2,80}[.:]?$")


def _run_in_heading(block: dict) -> str | None:
    """The bold numbered title that opens a paragraph ("7.3 Longer delays may apply."), or None."""
    lines = block.get("lines") or []
    if not lines:
        return None
    lead = ""
    for span in lines[0]["spans"]:
        if not (span["flags"] & 16 or "bold" in span["font"].lower()):
            break
        lead += span["text"]
    lead = _clean(lead)
    return lead if lead and _RUN_IN_RE.match(lead) else None


def _join_lines(lines: list[str]) -> str:
    """Join wrapped lines; a hyphen at a line end followed by a lowercase letter is a break hyphen."""
    out = lines[0].rstrip()
    for line in lines[1:]:
        line = line.strip()
        if out.endswith("-") and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}"
    return out


def _inside_any(box: BBox, regions: list[BBox | None]) -> bool:
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    return any(r and r.x0 - 1 <= cx <= r.x1 + 1 and r.y0 - 1 <= cy <= r.y1 + 1 for r in regions)


def _union(boxes: Iterable[BBox]) -> BBox | None:
    result: BBox | None = None
    for box in boxes:
        result = box if result is None else result.union(box)
    return result


def _cluster(values: Iterable[float], tol: float = 2.0) -> list[float]:
    out: list[float] = []
    for v in sorted(values):
        if out and v - out[-1] <= tol:
            continue
        out.append(v)
    return out


def _cell_texts(words: list[tuple], band: tuple[float, float], xs: list[float]) -> list[str]:
    """Text of each cell of a row band cut at the column rules `xs`; words are placed by their centres."""
    top, bottom = band
    cells: list[list[tuple]] = [[] for _ in xs[:-1]]
    for w in words:
        cx, cy = (w[0] + w[2]) / 2, (w[1] + w[3]) / 2
        if top <= cy <= bottom and xs[0] <= cx <= xs[-1]:
            for i in range(len(xs) - 1):
                if xs[i] <= cx <= xs[i + 1]:
                    cells[i].append(w)
                    break
    return [_join_cell_words(sorted(c, key=lambda w: (w[5], w[6], w[7]))) for c in cells]


def _join_cell_words(words: list[tuple]) -> str:
    """A cell's words in reading order; a word broken at a line end ("non-" / "customers") is
    rejoined with its hyphen kept ("non-customers"), not split by a space."""
    text = ""
    for n, w in enumerate(words):
        new_line = n > 0 and (w[5], w[6]) != (words[n - 1][5], words[n - 1][6])
        broken = new_line and len(words[n - 1][4]) > 1 and words[n - 1][4].endswith("-")
        if text and not broken:
            text += " "
        text += w[4]
    return _clean(text)


Rule = tuple[float, float, float]  # a horizontal rule (y, x0, x1) or a vertical one (x, y0, y1)


def _find_grid_tables(page) -> list[list[TextBlock]]:
    """Ruled tables from the page's vector drawings: one `table_row` block per grid row.

    PyMuPDF's `find_tables()` costs 0.3–0.7 s a page even on pages without tables, which would cap
    ingestion far below 100 pages/s, and it glues words together in this corpus. Bank documents draw
    their tables with ruling lines, so the grid is read directly: horizontal rules give row bands,
    the vertical rules that span a band give its cells, words are placed by their centres.
    """
    drawings = page.get_drawings()
    if len(drawings) < 6:
        return []
    hs, vs = _ruling_lines(drawings, page.rect.width * page.rect.height)
    if len(hs) < 3:
        return []
    words = page.get_text("words", flags=0)  # flags=0 expands ligatures (ﬀ → ff)
    tables = [t for t in _grid_rows(hs, vs, words) if len(t) >= 2]
    for n, table in enumerate(tables):
        for i, row in enumerate(table):
            row.table_id = f"p{page.number + 1}t{n}"
            row.table_header = i == 0
    return tables


def _ruling_lines(drawings: list[dict], page_area: float) -> tuple[list[Rule], list[Rule]]:
    """Horizontal and vertical rules among the drawings: lines, thin rectangles, and the edges
    of stroked cell rectangles."""
    hs: list[Rule] = []
    vs: list[Rule] = []
    for drawing in drawings:
        for item in drawing["items"]:
            if item[0] == "l":
                p1, p2 = item[1], item[2]
                if abs(p1.y - p2.y) < 1.5 and abs(p1.x - p2.x) > 8:
                    hs.append((p1.y, min(p1.x, p2.x), max(p1.x, p2.x)))
                elif abs(p1.x - p2.x) < 1.5 and abs(p1.y - p2.y) > 4:
                    vs.append((p1.x, min(p1.y, p2.y), max(p1.y, p2.y)))
            elif item[0] == "re":
                r = item[1]
                if r.width * r.height > 0.5 * page_area:
                    continue  # a page border, not a table
                if r.height < 2.5 and r.width > 8:
                    hs.append(((r.y0 + r.y1) / 2, r.x0, r.x1))
                elif r.width < 2.5 and r.height > 4:
                    vs.append(((r.x0 + r.x1) / 2, r.y0, r.y1))
                elif r.width > 8 and r.height > 4 and drawing.get("type") != "f":
                    # A stroked cell rectangle: all four edges are rules. Fill-only rectangles are
                    # cell or text-highlight backgrounds, not rules (they split headers per word).
                    hs += [(r.y0, r.x0, r.x1), (r.y1, r.x0, r.x1)]
                    vs += [(r.x0, r.y0, r.y1), (r.x1, r.y0, r.y1)]
    return hs, vs


def _band_columns(top: float, bottom: float, hs: list[Rule], vs: list[Rule]) -> list[float]:
    """The column rules cutting the row band (top, bottom); fewer than 3 means it is no table row."""
    xs = _cluster([v[0] for v in vs if v[1] <= top + 2 and v[2] >= bottom - 2])
    if len(xs) >= 3:
        return xs
    # No vertical rules: tables drawn with segmented horizontal rules, one per column. The same
    # segments must close the band at its bottom, or this is the gap between two tables (a
    # heading or paragraph), not a row.
    xs = _cluster([x for h in hs if abs(h[0] - top) <= 2 for x in (h[1], h[2])])
    xs_bottom = _cluster([x for h in hs if abs(h[0] - bottom) <= 2 for x in (h[1], h[2])])
    if len(xs) != len(xs_bottom) or any(abs(a - b) > 2 for a, b in zip(xs, xs_bottom)):
        return []
    return xs


def _grid_rows(hs: list[Rule], vs: list[Rule], words: list[tuple]) -> list[list[TextBlock]]:
    """Row bands between horizontal rules, grouped into tables: a table continues while each
    band starts where the last one ended."""
    ys = _cluster([h[0] for h in hs])
    tables: list[list[TextBlock]] = []
    current: list[TextBlock] = []
    last_bottom: float | None = None
    header_band, header_cols = (0.0, 0.0), 0
    for top, bottom in zip(ys, ys[1:]):
        if bottom - top < 4:
            continue
        xs = _band_columns(top, bottom, hs, vs)
        if len(xs) < 3:  # fewer than two cells: not a table band
            if current:
                tables.append(current)
                current, last_bottom = [], None
            continue
        adjoins = last_bottom is not None and abs(top - last_bottom) <= 3
        if current and not adjoins:
            tables.append(current)
            current = []
        last_bottom = bottom
        cells = _cell_texts(words, (top, bottom), xs)
        if not any(cells):
            continue
        if len(current) == 1 and 2 <= len(xs) - 1 < header_cols:
            # Header cells often carry per-word rules or highlights that split them into more
            # "cells" than the body has columns: cut the header again at the body's column rules.
            current[0] = TextBlock.row(_cell_texts(words, header_band, xs), trim=True, bbox=current[0].bbox)
        if not current:
            header_band, header_cols = (top, bottom), len(xs) - 1
        current.append(TextBlock.row(cells, trim=True, bbox=BBox(x0=xs[0], y0=top, x1=xs[-1], y1=bottom)))
    if current:
        tables.append(current)
    return tables


# --- images ---------------------------------------------------------------------------------


class ImageBackend(_Backend):
    """Photos and scans (each frame of a multi-frame TIFF is a page), OCR'd."""

    mimes = frozenset(IMAGE_MIMES)

    def pages(self, label: str, data: bytes, options: PageOptions, progress: Progress | None) -> tuple[list[Page], dict]:
        import numpy as np

        frames = _image_frames(label, data, options)
        pages = []
        for n, frame in enumerate(frames, start=1):
            if progress is not None:
                progress(n, len(frames))
            try:
                pages.append(ocr_page(n, np.asarray(frame), options))
            except Exception as exc:
                raise IngestError(label, f"OCR failed on page {n} ({type(exc).__name__}: {exc})") from exc
        return pages, {"ocr_pages": [p.number for p in pages]}


def _image_frames(label: str, data: bytes, options: PageOptions) -> list:
    from PIL import Image, ImageOps

    first = open_image(label, max_pixels=options.max_image_pixels, data=data)  # caps + full decode
    frames = [first]
    with Image.open(io.BytesIO(data)) as img:
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > options.max_pages:
            raise IngestError(label, f"too many frames ({n_frames} > limit {options.max_pages}; DOCTELLER_MAX_PAGES)")
        for i in range(1, n_frames):  # multi-frame TIFF: each frame is a page
            img.seek(i)
            w, h = img.size
            if w * h > options.max_image_pixels:
                raise IngestError(label, f"frame {i + 1} too large ({w}x{h} pixels > cap {options.max_image_pixels:,})")
            frames.append(ImageOps.exif_transpose(img.copy()).convert("RGB"))
    return frames


# --- Markdown / text / HTML -----------------------------------------------------------------


def _decode(path: Path, data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise IngestError(path, "text file is not UTF-8 or Windows-1252")


def _load_markdown(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    from markdown_it import MarkdownIt

    text = _decode(path, data)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[TextBlock] = []
    table_n = 0
    row_cells: list[str] = []
    in_header = False
    in_list = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            content = _clean(tokens[i + 1].content)
            if content:
                blocks.append(TextBlock(text=content, kind=BlockKind.heading, heading_level=int(tok.tag[1])))
            i += 3
            continue
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            in_list += 1
        elif tok.type in ("bullet_list_close", "ordered_list_close"):
            in_list -= 1
        elif tok.type == "table_open":
            table_n += 1
        elif tok.type == "thead_open":
            in_header = True
        elif tok.type == "thead_close":
            in_header = False
        elif tok.type == "tr_open":
            row_cells = []
        elif tok.type in ("th_open", "td_open"):
            row_cells.append(_clean(_inline_text(tokens[i + 1])))
        elif tok.type == "tr_close" and any(row_cells):
            blocks.append(TextBlock.row(row_cells, table_id=f"t{table_n}", table_header=in_header))
        elif tok.type == "inline" and tokens[i - 1].type == "paragraph_open":
            content = _clean(_inline_text(tok).replace("\n", " "))
            if content:
                blocks.append(TextBlock(text=content, kind=BlockKind.list_item if in_list else BlockKind.paragraph))
        elif tok.type in ("fence", "code_block"):
            if tok.content.strip():
                blocks.append(TextBlock(text=tok.content.strip(), kind=BlockKind.paragraph))
        i += 1
    return [Page(number=1, blocks=blocks)], {}


def _inline_text(token) -> str:
    """Plain text of an inline token: links keep their label, images their alt text, no markup."""
    if not token.children:
        return token.content
    parts = []
    for child in token.children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


# Plain-text structure, as people type it: "2. SELLING BACK LEFTOVER CURRENCY" or a line
# underlined with === / --- is a heading; "-", "*", "•" or "1)" starts a list item, and the
# item's wrapped lines are indented under it.
_TEXT_BULLET_RE = re.compile(r"^\s*(?:[-*•–]|\(?\d{1,2}\)|[a-z]\))\s+")
_TEXT_NUMBERED_RE = re.compile(r"^\s*(?:\d{1,2}(?:\.\d{1,2})*\.?|[A-Z]\.)\s+")
_TEXT_UNDERLINE_RE = re.compile(r"^\s*(=+|-+)\s*$")


def _text_heading_level(line: str) -> int | None:
    """2 for a numbered all-caps line ("1. ORDERING FOREIGN CURRENCY"), 1 for another short
    all-caps line without a full stop; None for anything else."""
    stripped = line.strip()
    letters = [ch for ch in stripped if ch.isalpha()]
    if not (3 <= len(stripped) <= 100) or len(letters) < 3 or stripped.endswith((".", ",", ";")):
        return None
    if not all(ch.isupper() for ch in letters):
        return None
    return 2 if _TEXT_NUMBERED_RE.match(stripped) else 1


def _text_blocks(paragraph: str) -> list[TextBlock]:
    """One blank-line-separated paragraph of plain text as heading, list-item and paragraph blocks."""
    lines = [line for line in paragraph.split("\n") if line.strip()]
    blocks: list[TextBlock] = []
    if len(lines) == 2 and _TEXT_UNDERLINE_RE.match(lines[1]) and not _TEXT_UNDERLINE_RE.match(lines[0]):
        level = 1 if lines[1].strip().startswith("=") else 2
        return [TextBlock(text=_clean(lines[0]), kind=BlockKind.heading, heading_level=level)]
    while lines and (level := _text_heading_level(lines[0])) is not None:
        text = _clean(lines.pop(0))
        if blocks and level == 1 and blocks[-1].heading_level == 1:
            # A heading typed over two lines ("CEDAR VALLEY SAVINGS BANK" / "FOREIGN CURRENCY…").
            blocks[-1].text = f"{blocks[-1].text} — {text}"
        else:
            blocks.append(TextBlock(text=text, kind=BlockKind.heading, heading_level=level))
    current: list[str] = []
    kind = BlockKind.paragraph

    def flush() -> None:
        text = _clean(" ".join(current))
        if text:
            blocks.append(TextBlock(text=text, kind=kind))
        current.clear()

    for line in lines:
        bullet = _TEXT_BULLET_RE.match(line)
        if bullet:
            flush()
            kind = BlockKind.list_item
            current.append(line[bullet.end():])
        else:
            current.append(line)
    flush()
    return blocks


def _load_text(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    text = _decode(path, data).replace("\r\n", "\n")
    # Form feeds separate pages in text exports of paginated documents.
    pages = []
    for number, page_text in enumerate(text.split("\f"), start=1):
        blocks = [block for p in re.split(r"\n\s*\n", page_text) for block in _text_blocks(p)]
        pages.append(Page(number=number, blocks=blocks))
    return pages, {}


HTML_BOILERPLATE = ("script", "style", "nav", "footer", "header", "aside", "noscript", "form", "iframe", "svg", "template")


def _load_html(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path, data), "html.parser")
    title = _clean(soup.title.get_text()) if soup.title else None
    for tag in soup(HTML_BOILERPLATE):
        tag.decompose()
    for tag in soup.select('[role="navigation"], [role="banner"], [role="contentinfo"], [aria-hidden="true"]'):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    blocks: list[TextBlock] = []
    table_n = 0
    for text_node in root.find_all(string=True):
        # A line break in HTML source is a space (except inside <pre>): "officers are at\nthe Main
        # Office" is one sentence.
        if "\n" in text_node and text_node.find_parent("pre") is None:
            text_node.replace_with(text_node.replace("\r", "").replace("\n", " "))
    for el in root.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "tr", "pre", "blockquote", "dt", "dd"]):
        if el.name in ("p", "li") and el.find_parent(["li", "td", "th"]) is not None and el.name != "li":
            continue  # its text is part of the enclosing list item or cell
        if el.name == "li" and el.find(["p", "ul", "ol"]):
            text = _clean(" ".join(el.find_all(string=True, recursive=False)))
        elif el.name == "tr":
            cells = [_clean(c.get_text(" ")) for c in el.find_all(["th", "td"], recursive=False)]
            if not any(cells):
                continue
            table = el.find_parent("table")
            if table is not None and not table.get("data-docteller-n"):
                table_n += 1
                table["data-docteller-n"] = str(table_n)
            header = bool(el.find("th")) and not el.find("td") or el.find_parent("thead") is not None
            table_id = f"t{table['data-docteller-n']}" if table is not None else None
            blocks.append(TextBlock.row(cells, table_id=table_id, table_header=header))
            continue
        elif el.name == "pre":
            text = el.get_text().strip("\n")
        else:
            text = _clean(el.get_text(" "))
        if not text:
            continue
        if el.name[0] == "h" and el.name[1:].isdigit():
            blocks.append(TextBlock(text=text, kind=BlockKind.heading, heading_level=int(el.name[1])))
        else:
            blocks.append(TextBlock(text=text, kind=BlockKind.list_item if el.name == "li" else BlockKind.paragraph))
    if not blocks:  # an HTML page without block tags: keep its plain text
        text = _clean(root.get_text(" "))
        blocks = [TextBlock(text=text)] if text else []
    return [Page(number=1, blocks=blocks)], {"title": title}


# --- DOCX / CSV / XLSX ----------------------------------------------------------------------


def _load_docx(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[TextBlock] = []
    table_n = 0
    body = document.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = Paragraph(child, document)
            text = _clean(para.text)
            if not text:
                continue
            style = (para.style.name if para.style is not None else "") or ""
            m = re.match(r"(?i)heading\s*(\d)", style)
            if m or style.lower() == "title":
                level = int(m.group(1)) if m else 1
                blocks.append(TextBlock(text=text, kind=BlockKind.heading, heading_level=min(level, 6)))
            elif "list" in style.lower():
                blocks.append(TextBlock(text=text, kind=BlockKind.list_item))
            else:
                blocks.append(TextBlock(text=text))
        elif tag == "tbl":
            table_n += 1
            for i, row in enumerate(Table(child, document).rows):
                cells: list[str] = []
                for cell in row.cells:  # merged cells repeat: keep each once
                    text = _clean(cell.text)
                    if not cells or text != cells[-1]:
                        cells.append(text)
                if any(cells):
                    blocks.append(TextBlock.row(cells, table_id=f"t{table_n}", table_header=i == 0))
    title = _clean(document.core_properties.title or "") or None
    return [Page(number=1, blocks=blocks)], {"title": title}


def _find_column(headers: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in headers]
    for i, h in enumerate(lowered):
        if h in names:
            return i
    for i, h in enumerate(lowered):  # "Customer question", "answer_text", "FAQ answer"
        words = re.findall(r"[a-z]+", h)
        if any(n in words for n in names if len(n) > 2):
            return i
    return None


def _rows_to_pages(path: Path, rows: list[list[str]], sheet: str | None = None) -> tuple[list[TextBlock], bool]:
    """Sheet rows → blocks. A FAQ sheet gives one `Q: … A: …` block per row, else table rows."""
    rows = [[_clean(str(c)) if c is not None else "" for c in r] for r in rows]
    rows = [r for r in rows if any(r)]
    if not rows:
        return [], False
    header, body = rows[0], rows[1:]
    q_col, a_col = _find_column(header, QUESTION_HEADERS), _find_column(header, ANSWER_HEADERS)
    blocks: list[TextBlock] = []
    if q_col is not None and a_col is not None and q_col != a_col:
        extra = [i for i, h in enumerate(header) if i not in (q_col, a_col) and h]
        for row in body:
            question = row[q_col] if q_col < len(row) else ""
            answer = row[a_col] if a_col < len(row) else ""
            if not (question or answer):
                continue
            text = f"Q: {question}\nA: {answer}"
            tags = [f"{header[i]}: {row[i]}" for i in extra if i < len(row) and row[i]]
            if tags:
                text += "\n" + "; ".join(tags)
            blocks.append(TextBlock(text=text, kind=BlockKind.table_row))
        return blocks, True
    table_id = f"sheet:{sheet}" if sheet else "t1"
    blocks.append(TextBlock.row(header, table_id=table_id, table_header=True))
    blocks.extend(TextBlock.row(row, trim=True, table_id=table_id) for row in body)
    return blocks, False


def _load_csv(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    text = _decode(path, data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(io.StringIO(text), dialect))
    blocks, faq = _rows_to_pages(path, rows)
    return [Page(number=1, blocks=blocks)], {"faq": faq}


def _load_xlsx(path: Path, data: bytes, options: PageOptions) -> tuple[list[Page], dict]:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        pages = []
        any_faq = False
        for number, sheet in enumerate(workbook.worksheets, start=1):  # each sheet is a page
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
            blocks, faq = _rows_to_pages(path, rows, sheet.title)
            any_faq |= faq
            if blocks:
                blocks.insert(0, TextBlock(text=sheet.title, kind=BlockKind.heading, heading_level=1))
            pages.append(Page(number=number, blocks=blocks))
        return pages, {"faq": any_faq}
    finally:
        workbook.close()


def _reader(mimes: set[str], read, doc: str) -> type[_Backend]:
    """A backend class for a format whose pages are read by `read(path, data, options)`."""
    return type(read.__name__.removeprefix("_load_").title() + "Backend", (_Backend,),
                {"mimes": frozenset(mimes), "read": staticmethod(read), "__doc__": doc})


MarkdownBackend = _reader({"text/markdown"}, _load_markdown, "Markdown: headings, paragraphs, lists, tables (markdown-it).")
TextBackend = _reader({"text/plain"}, _load_text, "Plain text: typed headings and lists; form feeds separate pages.")
HtmlBackend = _reader({"text/html"}, _load_html, "HTML: the main content's block elements, tables as rows.")
CsvBackend = _reader({"text/csv"}, _load_csv, "CSV: a FAQ sheet's question/answer rows, else table rows.")
DocxBackend = _reader({DOCX}, _load_docx, "DOCX: styled headings, list paragraphs, tables.")
XlsxBackend = _reader({XLSX}, _load_xlsx, "XLSX: each sheet a page, FAQ sheets as question/answer rows.")

BACKENDS: tuple[_Backend, ...] = (
    PdfBackend(), ImageBackend(), MarkdownBackend(), TextBackend(), HtmlBackend(), CsvBackend(), DocxBackend(), XlsxBackend(),
)
SUPPORTED_MIMES = frozenset(m for b in BACKENDS for m in b.mimes)


def backend_for(mime: str) -> _Backend | None:
    return next((b for b in BACKENDS if mime in b.mimes), None)
