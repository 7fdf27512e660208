"""Read an upload into positioned words and lines, one `PageContent` per page.

PDF pages with a text layer are read directly (PyMuPDF word boxes, confidence 1.0) and never
OCR'd; image-only PDF pages and photos/scans go through the OCR engine. Extractors work on the
same structure either way, so a statement table parser does not care whether it was scanned.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from docteller.model import BBox, BlockKind, Page, TextBlock
from docteller.protocols import OcrLine, OcrResult

if TYPE_CHECKING:
    from ingest.ocr import OrientationHints
from ingest.sniff import IMAGE_MIMES, PDF, IngestError, open_image, open_pdf, sniff, sniff_bytes

log = logging.getLogger(__name__)

# Uploads are customer documents: a statement may run to tens of pages, never thousands.
MAX_UPLOAD_PAGES = 200
# PDF pages with fewer characters than this in their text layer are treated as scans.
MIN_TEXT_LAYER_CHARS = 20
# Scanned pages are rendered at this resolution for OCR (A4 -> ~992 x 1403 px). OCR time grows
# with pixels; 150 dpi (then cut to MAX_OCR_SIDE) cost ~20% more per page and read the scanned
# statement in the corpus no better (transactions recall/precision 1.0 either way).
OCR_DPI = 120
# Photos larger than this (longer side, px) are downscaled before OCR: PP-OCR's detector
# resizes internally anyway, and reading time grows with pixels.
MAX_OCR_SIDE = 1600


@dataclass
class Word:
    text: str
    bbox: BBox
    confidence: float = 1.0

    @property
    def xc(self) -> float:
        return (self.bbox.x0 + self.bbox.x1) / 2

    @property
    def yc(self) -> float:
        return (self.bbox.y0 + self.bbox.y1) / 2


@dataclass
class Line:
    """Words sharing a visual row, left to right."""

    words: list[Word]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def bbox(self) -> BBox:
        box = self.words[0].bbox
        for w in self.words[1:]:
            box = box.union(w.bbox)
        return box

    @property
    def confidence(self) -> float:
        return min(w.confidence for w in self.words) if self.words else 0.0


@dataclass
class PageContent:
    number: int  # 1-based
    width: float
    height: float
    words: list[Word]
    # OCR phrases as the engine returned them (label/value extraction works on these); for a
    # text layer, PyMuPDF's own lines.
    phrases: list[OcrLine] = field(default_factory=list)
    ocr_used: bool = False
    ocr_engine: str | None = None
    rotation: int = 0
    image: np.ndarray | None = None  # kept for photos so the MRZ reader can retry other turns

    def lines(self, tolerance: float = 0.45) -> list[Line]:
        return group_rows(self.words, tolerance)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.phrases)

    @property
    def mean_confidence(self) -> float:
        if not self.phrases:
            return 0.0
        return float(sum(p.confidence for p in self.phrases) / len(self.phrases))

    def to_page(self) -> Page:
        blocks = [
            TextBlock(
                text=p.text,
                kind=BlockKind.line,
                bbox=p.bbox,
                confidence=p.confidence,
                source="ocr" if self.ocr_used else "text",
            )
            for p in self.phrases
        ]
        return Page(
            number=self.number,
            blocks=blocks,
            width=self.width,
            height=self.height,
            ocr_used=self.ocr_used,
            ocr_engine=self.ocr_engine,
        )


def group_rows(words: list[Word], tolerance: float = 0.45) -> list[Line]:
    """Cluster words into visual rows by vertical centre (tolerance is a fraction of word height)."""
    rows: list[list[Word]] = []
    centres: list[float] = []
    for word in sorted(words, key=lambda w: (w.yc, w.bbox.x0)):
        height = max(word.bbox.height, 1.0)
        if rows and abs(word.yc - centres[-1]) <= tolerance * height:
            rows[-1].append(word)
            n = len(rows[-1])
            centres[-1] = centres[-1] + (word.yc - centres[-1]) / n
        else:
            rows.append([word])
            centres.append(word.yc)
    return [Line(words=sorted(r, key=lambda w: w.bbox.x0)) for r in rows]


_SPACE_RUN = re.compile(r"\S+")


def split_phrase(line: OcrLine) -> list[Word]:
    """Split an OCR phrase into words with x-positions interpolated by character offset.

    PP-OCR boxes whole phrases; table parsing needs per-token positions. OCR-B/sans fonts are
    close enough to fixed pitch that proportional interpolation lands within a character.
    """
    text = line.text
    n = max(len(text), 1)
    box = line.bbox
    words = []
    for m in _SPACE_RUN.finditer(text):
        x0 = box.x0 + box.width * m.start() / n
        x1 = box.x0 + box.width * m.end() / n
        words.append(Word(m.group(0), BBox(x0=x0, y0=box.y0, x1=x1, y1=box.y1), line.confidence))
    return words


def content_from_ocr(number: int, result: OcrResult, image: np.ndarray | None = None, scale: float = 1.0) -> PageContent:
    """Page content from an OCR reading; boxes are mapped back by `scale` to the input's pixels."""
    phrases = result.lines
    if scale != 1.0:
        inv = 1.0 / scale
        phrases = [
            OcrLine(
                text=ln.text,
                bbox=BBox(x0=ln.bbox.x0 * inv, y0=ln.bbox.y0 * inv, x1=ln.bbox.x1 * inv, y1=ln.bbox.y1 * inv),
                confidence=ln.confidence,
            )
            for ln in phrases
        ]
    words = [w for ln in phrases for w in split_phrase(ln)]
    return PageContent(
        number=number,
        width=result.width / scale,
        height=result.height / scale,
        words=words,
        phrases=phrases,
        ocr_used=True,
        ocr_engine=result.engine,
        rotation=result.rotation,
        image=image,
    )


def _pdf_text_page(number: int, page) -> PageContent:
    words = [
        Word(str(w[4]), BBox(x0=w[0], y0=w[1], x1=w[2], y1=w[3]), 1.0)
        for w in page.get_text("words", sort=True)
        if str(w[4]).strip()
    ]
    phrases: list[OcrLine] = []
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            text = " ".join(s["text"].strip() for s in line["spans"] if s["text"].strip())
            if text:
                x0, y0, x1, y1 = line["bbox"]
                phrases.append(OcrLine(text=text, bbox=BBox(x0=x0, y0=y0, x1=x1, y1=y1), confidence=1.0))
    from ingest.ocr import sort_reading_order

    return PageContent(
        number=number,
        width=float(page.rect.width),
        height=float(page.rect.height),
        words=words,
        phrases=sort_reading_order(phrases),
    )


def _page_image(page) -> np.ndarray:
    """A scanned page rendered to RGB pixels at OCR_DPI."""
    import pymupdf

    pix = page.get_pixmap(dpi=OCR_DPI, colorspace=pymupdf.csRGB, alpha=False)
    return np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, 3).copy()


def ocr_image(
    number: int,
    image: np.ndarray,
    *,
    engine_name: str = "rapidocr",
    try_rotations: bool = True,
    keep_image: bool = False,
    hints: OrientationHints | None = None,
    preprocess: bool = False,
) -> PageContent:
    from ingest.ocr import OrientationHints, get_ocr_engine, limit_size, read_oriented, to_grayscale_contrast

    small, scale = limit_size(image, MAX_OCR_SIDE)
    if preprocess:
        small = to_grayscale_contrast(small)
    engine = get_ocr_engine(engine_name)
    hints = hints or OrientationHints()
    result = read_oriented(engine, small, try_rotations=try_rotations, accept=hints.accept,
                           worth_turning=hints.worth_turning, quarter_turn=hints.quarter_turn)
    return content_from_ocr(number, result, image=small if keep_image else None, scale=scale)


def load_pages(
    path: str | Path,
    *,
    data: bytes | None = None,
    name: str | None = None,
    engine_name: str = "rapidocr",
    max_pages: int = MAX_UPLOAD_PAGES,
    keep_images: bool = False,
    hints: OrientationHints | None = None,
    preprocess: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, list[PageContent]]:
    """(mime, pages) for a PDF or image upload. Raises `IngestError` for anything unreadable.
    `progress(page, pages)` is called as each page starts being read."""
    report = progress or (lambda page, pages: None)
    label = name or str(path)
    if data is not None:
        if not data:
            raise IngestError(label, "empty file (0 bytes)")
        mime = sniff_bytes(data[:4096], label)
        if mime is None:
            raise IngestError(label, "unsupported file type (content not recognised)")
    else:
        mime = sniff(path)
    if mime == PDF:
        doc = open_pdf(label if data is not None else path, max_pages=max_pages, data=data)
        pages: list[PageContent] = []
        try:
            for i, page in enumerate(doc, start=1):
                report(i, doc.page_count)
                content = _pdf_text_page(i, page)
                if sum(len(w.text) for w in content.words) >= MIN_TEXT_LAYER_CHARS:
                    pages.append(content)
                    continue
                image = _page_image(page)
                ocr = ocr_image(i, image, engine_name=engine_name, keep_image=keep_images, hints=hints, preprocess=preprocess)
                # Map OCR pixel boxes onto PDF points so every page of a PDF shares one unit.
                factor = 72.0 / OCR_DPI
                ocr.phrases = [
                    OcrLine(
                        text=p.text,
                        bbox=BBox(x0=p.bbox.x0 * factor, y0=p.bbox.y0 * factor, x1=p.bbox.x1 * factor, y1=p.bbox.y1 * factor),
                        confidence=p.confidence,
                    )
                    for p in ocr.phrases
                ]
                ocr.words = [w for p in ocr.phrases for w in split_phrase(p)]
                ocr.width, ocr.height = float(page.rect.width), float(page.rect.height)
                pages.append(ocr)
        finally:
            doc.close()
        return mime, pages
    if mime in IMAGE_MIMES:
        image = np.asarray(open_image(label if data is not None else path, data=data))
        report(1, 1)
        return mime, [ocr_image(1, image, engine_name=engine_name, keep_image=keep_images, hints=hints, preprocess=preprocess)]
    raise IngestError(label, f"not a PDF or image ({mime}); extraction reads scans, photos and PDFs")


def read_pages(path: str | Path, *, data: bytes | None = None, name: str | None = None) -> list[Page]:
    """The upload's text as `docteller.model.Page`s (OCR'd where needed), for chunking."""
    _, pages = load_pages(path, data=data, name=name)
    return [p.to_page() for p in pages]
