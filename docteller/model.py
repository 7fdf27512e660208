"""The typed document model that flows through docteller.

Ingest produces a `Document` (pages of `TextBlock`s with boxes and OCR confidence), retrieval
splits it into `Chunk`s that remember their document and page(s), extraction attaches `Field`s,
`Check`s and `Transaction`s with provenance, the agent cites chunks and fields, and the UI shows
all of it. Everything is pydantic so it serialises to JSON the same way everywhere.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field as PydanticField, computed_field, field_validator, model_validator

from docteller.check_labels import CheckName, check_label


class BBox(BaseModel):
    """Axis-aligned box in page pixel (images) or PDF point (text layer) coordinates, origin top-left."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_points(cls, points: list[list[float]] | list[tuple[float, float]]) -> "BBox":
        """Bounding box of a polygon (OCR engines return 4-point quads)."""
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        return cls(x0=min(xs), y0=min(ys), x1=max(xs), y1=max(ys))

    def as_list(self) -> list[float]:
        return [round(self.x0, 2), round(self.y0, 2), round(self.x1, 2), round(self.y1, 2)]

    def union(self, other: "BBox") -> "BBox":
        return BBox(
            x0=min(self.x0, other.x0),
            y0=min(self.y0, other.y0),
            x1=max(self.x1, other.x1),
            y1=max(self.y1, other.y1),
        )

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


class Word(BaseModel):
    """One word with its box: from a PDF's text layer (confidence 1.0) or cut from an OCR phrase."""

    text: str
    bbox: BBox
    confidence: float = 1.0

    @property
    def xc(self) -> float:
        return (self.bbox.x0 + self.bbox.x1) / 2

    @property
    def yc(self) -> float:
        return (self.bbox.y0 + self.bbox.y1) / 2


class TextLine(BaseModel):
    """A line as read: an OCR engine's phrase, or a line of a PDF's text layer.

    Label/value extraction (IDs, forms, receipts, statement headers) works on these."""

    text: str
    bbox: BBox
    confidence: float = 1.0


class WordRow(BaseModel):
    """Words sharing a visual row, left to right: a statement's table row, a receipt's line."""

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


class BlockKind(str, Enum):
    heading = "heading"
    paragraph = "paragraph"
    table_row = "table_row"
    list_item = "list_item"
    line = "line"  # an OCR line with no further structure known


CELL_SEPARATOR = " | "  # how a table row's cells read as text (indexed, quoted, shown)


class TextBlock(BaseModel):
    """A piece of text on a page: a heading, paragraph, table row or OCR line."""

    text: str
    kind: BlockKind = BlockKind.paragraph
    bbox: BBox | None = None
    # 1.0 for a PDF text layer or born-digital text; the OCR engine's score otherwise.
    confidence: float = 1.0
    heading_level: int | None = None  # 1..6 for headings
    source: Literal["text", "ocr"] = "text"
    # Table rows: which table on the page they belong to, and whether this row is its header
    # (the chunker repeats the header row in every chunk of that table).
    table_id: str | None = None
    table_header: bool = False
    cells: list[str] | None = None  # a table row's cells, as read (its text joins them with " | ")

    @classmethod
    def row(cls, cells: Sequence[str], *, trim: bool = False, **fields: Any) -> "TextBlock":
        """A table row block; `trim` drops the separators of empty cells at either end."""
        text = CELL_SEPARATOR.join(cells)
        return cls(text=text.strip(" |") if trim else text, kind=BlockKind.table_row, cells=list(cells), **fields)


class Page(BaseModel):
    """One page: its structured blocks (what is indexed) and, when the reader was asked to keep
    them (`PageOptions.keep_words`), the words and lines with their boxes (what extraction reads).
    Both come from the same reading of the page."""

    number: int  # 1-based, as a person would cite it
    blocks: list[TextBlock] = PydanticField(default_factory=list)
    width: float | None = None  # page/image size in the units of the block boxes
    height: float | None = None
    ocr_used: bool = False
    ocr_engine: str | None = None
    words: list[Word] = PydanticField(default_factory=list)
    phrases: list[TextLine] = PydanticField(default_factory=list)  # lines as read, in reading order
    rotation: int = 0  # degrees the page image was turned (clockwise) before it read upright
    # The pixels OCR read (a photo's, downscaled), kept only while extraction may look again
    # (an MRZ at other turns, a receipt's header on its own); never serialised.
    image: Any = PydanticField(default=None, exclude=True, repr=False)

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks)

    @property
    def phrase_text(self) -> str:
        """The page's lines as read, one per line (what label and keyword matching reads)."""
        return "\n".join(p.text for p in self.phrases)

    def word_rows(self, tolerance: float = 0.45) -> list[WordRow]:
        """The words in visual rows (tolerance: a fraction of a word's height)."""
        from docteller.parsing.rows import group_rows

        rows = group_rows(self.words, tolerance=tolerance, anchor="mean", height="own")
        return [WordRow(words=row) for row in rows]


PUBLISHER_MAX_CHARS = 80
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_publisher(value: str | None) -> str | None:
    """A publisher name as stored: control and direction-override characters removed, spaces
    collapsed, at most `PUBLISHER_MAX_CHARS`; empty means the bank's own document (None)."""
    if value is None:
        return None
    text = " ".join(_CONTROL_RE.sub(" ", str(value)).split())[:PUBLISHER_MAX_CHARS].strip()
    return text or None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class Document(BaseModel):
    """One source file. `id` is the sha256 of its bytes, so identical content is one document."""

    id: str
    source: str  # path or upload name as given
    title: str
    mime: str
    pages: list[Page] = PydanticField(default_factory=list)
    metadata: dict[str, Any] = PydanticField(default_factory=dict)
    # "kb" for the bank's knowledge base, "upload" for a customer's document in a session.
    origin: Literal["kb", "upload"] = "kb"
    # Another institution's document in the KB (a US bank's agreement): its name, so answers cite
    # it by name. None: the bank's own document ("our policy").
    publisher: str | None = None

    @field_validator("publisher")
    @classmethod
    def _clean_publisher(cls, value: str | None) -> str | None:
        return clean_publisher(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def page(self, number: int) -> Page:
        for p in self.pages:
            if p.number == number:
                return p
        raise KeyError(f"{self.source}: no page {number}")


class Chunk(BaseModel):
    """A retrievable passage. `id` is stable: `<doc_id[:16]>:<ordinal>`."""

    id: str
    doc_id: str
    ordinal: int
    text: str
    page_start: int
    page_end: int
    heading_path: list[str] = PydanticField(default_factory=list)
    char_start: int = 0  # offsets into the page_start page's text
    char_end: int = 0
    kind: BlockKind = BlockKind.paragraph
    bbox: BBox | None = None  # union of block boxes on page_start, for highlighting
    # Denormalised so a search hit can be cited without loading the document.
    title: str = ""
    source: str = ""
    doc_type: str = ""  # mime or a short type label used by metadata filters
    publisher: str | None = None  # the document's publisher when it is not the bank (see `Document`)

    @field_validator("publisher")
    @classmethod
    def _clean_publisher(cls, value: str | None) -> str | None:
        return clean_publisher(value)

    @property
    def pages(self) -> list[int]:
        return list(range(self.page_start, self.page_end + 1))

    def embedding_text(self) -> str:
        """Text that is embedded: headings give short passages their context."""
        head = " > ".join(self.heading_path)
        return f"{head}\n{self.text}" if head else self.text


class SearchHit(BaseModel):
    chunk: Chunk
    score: float
    vector_rank: int | None = None
    bm25_rank: int | None = None
    vector_score: float | None = None  # cosine similarity, used to judge evidence strength

    def as_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.chunk.doc_id,
            "chunk_id": self.chunk.id,
            "title": self.chunk.title,
            "source": self.chunk.source,
            "page": self.chunk.page_start,
            "text": self.chunk.text,
            "score": round(self.score, 6),
        }


# --- Extraction ---------------------------------------------------------------------------


class Field(BaseModel):
    """An extracted value with provenance. `value` is normalised (dates ISO, amounts decimal str:
    `amount()` reads it as a `Decimal`)."""

    name: str
    value: str | None
    confidence: float = 0.0
    page: int | None = None
    bbox: BBox | None = None
    raw: str | None = None  # the text as read, before normalisation
    source: str = ""  # "mrz", "visual", "text", "ocr", "inferred", "computed", "user" (a correction)
    sensitive: bool = False  # account / document numbers: masked in logs and display

    def amount(self) -> Decimal | None:
        """The value as an amount, or None when it is none (absent, or not a number)."""
        from docteller.parsing.money import to_decimal

        return to_decimal(self.value)

    def uncertain(self, below: float) -> bool:
        """Read (or guessed) with less confidence than `below`; a customer's own value never is."""
        return self.value is not None and self.source != "user" and self.confidence < below

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "confidence": round(self.confidence, 4),
            "page": self.page,
            "bbox": self.bbox.as_list() if self.bbox else None,
        }


class CheckStatus(str, Enum):
    passed = "pass"
    failed = "fail"
    not_read = "not read"


class Check(BaseModel):
    """A verdict on the document. `ok` is tri-state: True passed, False failed, None could not be
    checked because a value it needs was not read (shown neutral: neither ✓ nor ✗).

    `name` is the stable machine key (JSON, code); `label` is what people read."""

    name: CheckName
    ok: bool | None
    detail: str = ""
    label: str = ""

    @model_validator(mode="after")
    def _default_label(self) -> "Check":
        if not self.label:
            self.label = check_label(self.name)
        return self

    @property
    def status(self) -> CheckStatus:
        if self.ok is None:
            return CheckStatus.not_read
        return CheckStatus.passed if self.ok else CheckStatus.failed


class Transaction(BaseModel):
    date: str | None  # ISO date
    description: str
    amount: Decimal  # signed: + credit, - debit (JSON: a decimal string, as printed)
    balance: Decimal | None = None
    page: int | None = None
    bbox: BBox | None = None
    confidence: float = 1.0
    row_ok: bool | None = None  # running-balance check for this row, None when not checkable


class Redaction(BaseModel):
    """Where a sensitive number shows on a page (also where no field was read from it, such as a
    printed personal number): page previews paint over it."""

    page: int
    bbox: BBox


DocType = Literal["passport", "id", "visa", "statement", "receipt", "form", "unknown"]


class ExtractionResult(BaseModel):
    """What `docteller extract` prints and what the agent and UI consume."""

    source: str
    doc_id: str
    doc_type: DocType = "unknown"
    fields: dict[str, Field] = PydanticField(default_factory=dict)
    checks: dict[CheckName, Check] = PydanticField(default_factory=dict)
    transactions: list[Transaction] = PydanticField(default_factory=list)
    warnings: list[str] = PydanticField(default_factory=list)
    redactions: list[Redaction] = PydanticField(default_factory=list)
    pages: int = 0
    seconds: float = 0.0

    def value(self, name: str) -> str | None:
        f = self.fields.get(name)
        return f.value if f else None

    def amount(self, name: str) -> Decimal | None:
        """The field `name` as an amount (balances, totals), or None."""
        f = self.fields.get(name)
        return f.amount() if f else None

    def add_check(self, name: CheckName | str, ok: bool | None, detail: str = "") -> Check:
        """Record (or replace) the check `name`, keyed by its typed name."""
        check = Check(name=CheckName(name), ok=ok, detail=detail)
        self.checks[check.name] = check
        return check

    def checks_with(self, status: CheckStatus) -> list[Check]:
        return [c for c in self.checks.values() if c.status is status]

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "doc_id": self.doc_id,
            "doc_type": self.doc_type,
            "fields": {k: f.as_json() for k, f in self.fields.items()},
            "checks": {
                str(k): {"ok": c.ok, "status": c.status.value, "label": c.label, "detail": c.detail}
                for k, c in self.checks.items()
            },
            "transactions": [t.model_dump(mode="json", exclude={"bbox"}) for t in self.transactions],
            "warnings": list(self.warnings),
        }


# --- Sessions: uploads and citations -------------------------------------------------------


class UploadedDocument(BaseModel):
    """A customer's upload within one session, as every layer sees it: what was read from it
    (`extraction`), how many passages were indexed for the session, and, where the UI keeps a
    copy to show its pages, where that copy is and its type."""

    doc_id: str
    name: str  # the customer's name for the file: shown, never used to build a path
    extraction: ExtractionResult
    chunks: int = 0  # passages indexed in the session's upload index
    path: Path | None = None  # the kept copy (a server-chosen name), when the UI keeps one
    mime: str | None = None


class Citation(BaseModel):
    """Where an answer's words come from: a KB chunk, a passage of an upload, or (a computed
    answer about an upload) the page and the boxes of the rows or lines it used."""

    doc_id: str
    title: str
    page: int | None
    chunk_id: str | None = None
    source: str = ""
    origin: Literal["kb", "upload"] = "kb"
    publisher: str | None = None  # another institution's document: its publisher (None: ours)
    # A computed answer about an upload: the boxes (page units) of the rows or lines it used.
    boxes: list[BBox] = PydanticField(default_factory=list)


def one_per_page(citations: Iterable[Citation]) -> list[Citation]:
    """The citations once per document page, first one kept (two quoted lines of one page cite
    two chunks, but are one source to list)."""
    seen: set[tuple[str, int | None]] = set()
    kept: list[Citation] = []
    for c in citations:
        if (c.doc_id, c.page) not in seen:
            seen.add((c.doc_id, c.page))
            kept.append(c)
    return kept
