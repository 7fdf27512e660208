"""The page pipeline: one reading of each page, configured by `PageOptions`.

A PDF page with a text layer is read from it; a scanned PDF page (rendered by
`ingest.raster.rasterise` at `ocr_dpi`) or a photo goes through the OCR engine once. Either way
the result is a `docteller.model.Page`: blocks for the index and, with `keep_words`, the words
and lines with boxes that extraction reads. Indexing and extraction share that one reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from docteller.model import CELL_SEPARATOR, BBox, BlockKind, Page, TextBlock, TextLine, Word
from docteller.parsing.rows import group_rows, row_box
from docteller.parsing.text import clean
from docteller.protocols import OcrResult
from docteller.settings import Settings, get_settings

# Customer uploads: a statement may run to tens of pages, never thousands.
MAX_UPLOAD_PAGES = 200

# Called once per page as it starts being read: (page number, page count).
Progress = Callable[[int, int], None]


class PageOptions(BaseModel):
    """How pages are read. `for_index` and `for_upload` are the two configurations in use."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    # Scanned PDF pages are rendered at this resolution for OCR.
    ocr_dpi: int = 200
    # Images larger than this (longer side, px) are downscaled before OCR; None reads them as they are.
    ocr_max_side: int | None = None
    try_rotations: bool = False  # photos: try 90/180/270 degree turns when the reading looks wrong
    hints: Any = None  # `ingest.ocr.OrientationHints` (IDs: an MRZ that passes its check digits)
    engine: str = "rapidocr"
    preprocess: bool = False  # grayscale + autocontrast before OCR
    keep_words: bool = False  # words and lines with boxes, for extraction
    keep_images: bool = False  # the OCR'd pixels, for extraction's second looks
    max_pages: int = 500
    max_image_pixels: int = 60_000_000
    min_text_chars: int = 20  # a PDF page with less text than this in its text layer is OCR'd

    @classmethod
    def for_index(cls, settings: Settings | None = None) -> "PageOptions":
        """The knowledge base: 200 dpi scans, pages read as they lie, no word geometry kept."""
        settings = settings or get_settings()
        return cls(max_pages=settings.max_pages, max_image_pixels=settings.max_image_pixels,
                   min_text_chars=settings.ocr_min_text_chars)

    @classmethod
    def for_upload(cls, settings: Settings | None = None, **overrides: Any) -> "PageOptions":
        """A customer's upload, read once for both extraction and the session's index.

        Scanned pages at 120 dpi (A4 -> ~992 x 1403 px): OCR time grows with pixels, and 150 dpi
        cost ~20% more per page and read the scanned statement in the corpus no better
        (transactions recall/precision 1.0 either way). Photos are cut to 1600 px on their
        longer side (PP-OCR's detector resizes internally anyway) and turned upright."""
        settings = settings or get_settings()
        base = dict(ocr_dpi=120, ocr_max_side=1600, try_rotations=True, keep_words=True, keep_images=True,
                    max_pages=min(MAX_UPLOAD_PAGES, settings.max_pages), max_image_pixels=settings.max_image_pixels,
                    min_text_chars=settings.ocr_min_text_chars)
        return cls(**{**base, **overrides})


# --- text-layer pages ------------------------------------------------------------------------


def text_layer_geometry(pdf_page: Any) -> tuple[list[Word], list[TextLine]]:
    """A text-layer page's words and lines with their boxes (PDF points), in reading order."""
    from ingest.ocr import sort_reading_order

    words = [
        Word(text=str(w[4]), bbox=BBox(x0=w[0], y0=w[1], x1=w[2], y1=w[3]))
        for w in pdf_page.get_text("words", sort=True)
        if str(w[4]).strip()
    ]
    lines: list[TextLine] = []
    for block in pdf_page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            text = " ".join(s["text"].strip() for s in line["spans"] if s["text"].strip())
            if text:
                x0, y0, x1, y1 = line["bbox"]
                lines.append(TextLine(text=text, bbox=BBox(x0=x0, y0=y0, x1=x1, y1=y1)))
    return words, sort_reading_order(lines)


# --- OCR'd pages -----------------------------------------------------------------------------


_NON_SPACE = re.compile(r"\S+")


def split_phrase(line: TextLine) -> list[Word]:
    """Split an OCR phrase into words with x-positions interpolated by character offset.

    PP-OCR boxes whole phrases; table parsing needs per-token positions. OCR-B/sans fonts are
    close enough to fixed pitch that proportional interpolation lands within a character.
    """
    text = line.text
    n = max(len(text), 1)
    box = line.bbox
    return [
        Word(text=m.group(0), bbox=BBox(x0=box.x0 + box.width * m.start() / n, y0=box.y0,
                                        x1=box.x0 + box.width * m.end() / n, y1=box.y1), confidence=line.confidence)
        for m in _NON_SPACE.finditer(text)
    ]


def scale_line(line: TextLine, factor: float) -> TextLine:
    b = line.bbox
    return TextLine(text=line.text, confidence=line.confidence,
                    bbox=BBox(x0=b.x0 * factor, y0=b.y0 * factor, x1=b.x1 * factor, y1=b.y1 * factor))


def row_blocks(lines: list[TextLine]) -> list[TextBlock]:
    """OCR lines that sit on one visual row (a table row, a label and its value) as one block,
    cells joined with " | ", for the index."""
    rows = group_rows(lines, anchor="row", presorted=True, fits=lambda row, ln: ln.bbox.x0 >= row_box(row).x0)
    blocks = []
    for row in rows:
        text = clean(CELL_SEPARATOR.join(ln.text for ln in row))
        if text:
            blocks.append(TextBlock(text=text, kind=BlockKind.line, bbox=row_box(row),
                                    confidence=min(ln.confidence for ln in row), source="ocr"))
    return blocks


def ocr_page(number: int, image: np.ndarray, options: PageOptions, *, points_per_pixel: float = 1.0,
             size: tuple[float, float] | None = None) -> Page:
    """Read one page image with the OCR engine, once.

    Boxes come back in the image's pixels, or, with `points_per_pixel` (72 / dpi for a rendered
    PDF page) and the page's `size` in points, in PDF points like text-layer pages, so
    highlights and table parsing work the same way on every page of a PDF."""
    from ingest.ocr import OrientationHints, get_ocr_engine, limit_size, read_oriented, to_grayscale_contrast

    small, scale = limit_size(image, options.ocr_max_side) if options.ocr_max_side else (image, 1.0)
    if options.preprocess:
        small = to_grayscale_contrast(small)
    hints = options.hints or OrientationHints()
    result = read_oriented(get_ocr_engine(options.engine), small, try_rotations=options.try_rotations,
                           accept=hints.accept, worth_turning=hints.worth_turning, quarter_turn=hints.quarter_turn)
    return page_from_reading(number, result, factor=points_per_pixel / scale, size=size,
                             keep_words=options.keep_words, image=small if options.keep_images else None)


def page_from_reading(number: int, result: OcrResult, *, factor: float = 1.0, size: tuple[float, float] | None = None,
                      keep_words: bool = True, image: np.ndarray | None = None) -> Page:
    """A page from an OCR reading; boxes are multiplied by `factor` (into the page's units)."""
    lines = [scale_line(ln, factor) for ln in result.lines] if factor != 1.0 else list(result.lines)
    width, height = size or (result.width * factor, result.height * factor)
    return Page(
        number=number,
        blocks=row_blocks(lines),
        width=width,
        height=height,
        ocr_used=True,
        ocr_engine=result.engine,
        words=[w for ln in lines for w in split_phrase(ln)] if keep_words else [],
        phrases=lines if keep_words else [],
        rotation=result.rotation,
        image=image,
    )


def ocr_pdf_page(pdf_page: Any, options: PageOptions) -> Page:
    """A scanned PDF page: rendered at `ocr_dpi`, OCR'd, boxes in PDF points."""
    from ingest.raster import page_pixels

    image = page_pixels(pdf_page, options.ocr_dpi)
    rect = pdf_page.rect
    return ocr_page(pdf_page.number + 1, image, options, points_per_pixel=72.0 / options.ocr_dpi,
                    size=(float(rect.width), float(rect.height)))
