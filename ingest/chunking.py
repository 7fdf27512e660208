"""Structure-aware chunking: `Document` → `Chunk`s that keep headings, pages, offsets and boxes.

Rules, in order of importance:
- A chunk never mixes two sections: a heading starts a new chunk, and the heading path
  (e.g. ["6. ACH and Wire Transfers", "B. Types of ACH and Wire Transfers"]) travels with it.
- Table rows are never split; a table's header row is repeated at the top of each of its chunks,
  so "$45.00" is always read next to "Fees".
- FAQ sheets (a question and an answer column) give exactly one chunk per row.
- Prose is packed up to `size` characters; a paragraph longer than that is cut at sentence
  (then word) boundaries with `overlap` characters repeated, so no fact is cut in half unseen.
- A numbered list's lead-in is repeated at the top of each chunk of its items, as a table's
  header row is: a statute's "… shall not exceed the lesser of" / "(1) $50; or" / "(2) …" cut
  after "(1)" leaves "(2) the amount …" a limit of what?
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from docteller.model import BBox, BlockKind, Chunk, Document, TextBlock
from docteller.settings import get_settings

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
# An enumerated item: "(1) $50; or", "(a) …", "2. …", "iv) …".
_ENUMERATED = re.compile(r"^\(?(?:\d{1,3}|[a-zA-Z]|[ivxlIVXL]{1,5})[.)]\s+\S")
# A sentence that introduces a list instead of ending: "… the lesser of", "… as follows:".
_OPEN_ENDED = re.compile(r"(?:[^.!?;)\]\"”]|:)$")
LEAD_IN_CHARS = 400


@dataclass
class _Piece:
    """A block (or part of a long block) placed on its page, with offsets into `Page.text`."""

    text: str
    page: int
    char_start: int
    char_end: int
    kind: BlockKind
    bbox: BBox | None
    table_id: str | None = None


@dataclass
class _Draft:
    pieces: list[_Piece] = field(default_factory=list)
    heading_path: list[str] = field(default_factory=list)
    header_row: _Piece | None = None  # repeated table header, not counted as the chunk's own text

    @property
    def length(self) -> int:
        n = sum(len(p.text) + 1 for p in self.pieces)
        return n + (len(self.header_row.text) + 1 if self.header_row else 0)

    def has_body(self) -> bool:
        return any(p.kind is not BlockKind.heading for p in self.pieces)


def doc_type_of(doc: Document) -> str:
    """Short label used by metadata filters: pdf, markdown, html, text, csv, xlsx, docx, image, faq."""
    if doc.metadata.get("faq"):
        return "faq"
    mime = doc.mime
    if mime.startswith("image/"):
        return "image"
    return {
        "application/pdf": "pdf",
        "text/markdown": "markdown",
        "text/html": "html",
        "text/plain": "text",
        "text/csv": "csv",
    }.get(mime, "xlsx" if "spreadsheet" in mime else "docx" if "word" in mime else mime)


def chunk_document(doc: Document, size: int | None = None, overlap: int | None = None) -> list[Chunk]:
    settings = get_settings()
    size = size or settings.chunk_size
    overlap = settings.chunk_overlap if overlap is None else overlap
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk size ({size})")
    builder = _ChunkBuilder(doc, size, overlap)
    faq = bool(doc.metadata.get("faq"))
    for page in doc.pages:
        offset = 0
        for block in page.blocks:
            start = offset
            offset += len(block.text) + 1  # Page.text joins blocks with "\n"
            if not block.text.strip():
                continue
            piece = _Piece(block.text, page.number, start, start + len(block.text), block.kind, block.bbox, block.table_id)
            if faq and block.kind is BlockKind.table_row:
                builder.single(piece)
            elif block.kind is BlockKind.heading:
                builder.heading(piece, block.heading_level or 1)
            elif block.kind is BlockKind.table_row and block.table_id:
                builder.table_row(piece, is_header=block.table_header)
            else:
                builder.prose(piece)
    builder.finish()
    return builder.chunks


class _ChunkBuilder:
    def __init__(self, doc: Document, size: int, overlap: int) -> None:
        self.doc = doc
        self.size = size
        self.overlap = overlap
        self.doc_type = doc_type_of(doc)
        self.chunks: list[Chunk] = []
        self.headings: list[tuple[int, str]] = []  # (level, text) stack
        self.draft = _Draft()
        self.table_headers: dict[str, _Piece] = {}
        self.last_prose: _Piece | None = None  # the prose piece before the current one
        self.list_lead: _Piece | None = None  # the lead-in of the numbered list being chunked

    # -- structure ---------------------------------------------------------------------------

    def heading(self, piece: _Piece, level: int) -> None:
        self.last_prose = self.list_lead = None
        if self.draft.has_body():
            self.flush()
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, piece.text))
        self.draft.pieces.append(piece)
        self.draft.heading_path = self._path()

    def single(self, piece: _Piece) -> None:
        """A FAQ row: one chunk on its own, question and answer together."""
        self.flush()
        self.draft.heading_path = self._path()
        self.draft.pieces.append(piece)
        self.flush()

    def table_row(self, piece: _Piece, is_header: bool) -> None:
        self.last_prose = self.list_lead = None
        table = piece.table_id or ""
        if is_header:
            self.table_headers[table] = piece
        header = self.table_headers.get(table)
        in_same_table = bool(self.draft.pieces) and self.draft.pieces[-1].table_id == table
        if self.draft.pieces and self.draft.length + len(piece.text) + 1 > self.size and self.draft.has_body():
            self.flush()
            in_same_table = False
        if not in_same_table and header is not None and header is not piece and not self._draft_contains(header):
            self.draft.header_row = header
        if not self.draft.pieces:
            self.draft.heading_path = self._path()
        self.draft.pieces.append(piece)

    def prose(self, piece: _Piece) -> None:
        self._track_list(piece)
        if not self.draft.pieces:
            self.draft.heading_path = self._path()
        if self.draft.length + len(piece.text) + 1 <= self.size:
            self.draft.pieces.append(piece)
            return
        if self.draft.has_body():
            tail = self._overlap_tail()
            self.flush()
            if tail is not None:
                self._open_with(tail)
        if len(piece.text) + self.draft.length + 1 <= self.size:
            self.draft.pieces.append(piece)
            return
        for part in self._split_long(piece, self.size - self.draft.length - 1):
            if self.draft.pieces and self.draft.length + len(part.text) + 1 > self.size and self.draft.has_body():
                self.flush()
            if not self.draft.pieces:
                self.draft.heading_path = self._path()
                self._open_with(part)
            else:
                self.draft.pieces.append(part)
        # The last part stays open so following short paragraphs can join it.

    # -- helpers -----------------------------------------------------------------------------

    def _open_with(self, piece: _Piece) -> None:
        """Start the new chunk with `piece`, the rest of a block the last chunk held. The list
        lead-in `flush` repeated stays only above one of its items: above the middle of an item
        ("… is limited to the lesser of" + "the day the notice arrives, when …") it reads as the
        start of a list item that isn't one."""
        if self.draft.header_row is self.list_lead and not _ENUMERATED.match(piece.text):
            self.draft.header_row = None
        self.draft.pieces.append(piece)

    def _track_list(self, piece: _Piece) -> None:
        """Remember the lead-in of the numbered list `piece` belongs to (None outside a list)."""
        if not _ENUMERATED.match(piece.text):
            self.list_lead = None
        elif self.list_lead is None and self.last_prose is not None and not _ENUMERATED.match(self.last_prose.text):
            last = self.last_prose
            sentence = _SENTENCE_END.split(last.text.rstrip())[-1]
            if _OPEN_ENDED.search(sentence) and len(sentence) <= LEAD_IN_CHARS:
                start = last.char_end - len(sentence)
                self.list_lead = _Piece(sentence, last.page, start, last.char_end, last.kind, last.bbox, None)
        self.last_prose = piece

    def _path(self) -> list[str]:
        return [text for _, text in self.headings]

    def _draft_contains(self, piece: _Piece) -> bool:
        return any(p is piece for p in self.draft.pieces)

    def _overlap_tail(self) -> _Piece | None:
        """The last sentences (≤ overlap chars) of the chunk being closed, to open the next one."""
        if self.overlap <= 0:
            return None
        last = self.draft.pieces[-1]
        if last.kind in (BlockKind.heading, BlockKind.table_row) or len(last.text) <= 0:
            return None
        sentences = _SENTENCE_END.split(last.text)
        tail = ""
        for sentence in reversed(sentences):
            candidate = f"{sentence} {tail}".strip()
            if len(candidate) > self.overlap:
                break
            tail = candidate
        if not tail or tail == last.text and len(self.draft.pieces) == 1:
            return None
        start = last.char_end - len(tail)
        return _Piece(tail, last.page, start, last.char_end, last.kind, last.bbox, None)

    def _split_long(self, piece: _Piece, first_room: int) -> list[_Piece]:
        """Cut a long block at sentence, then word boundaries; consecutive parts overlap."""
        text = piece.text
        parts: list[_Piece] = []
        start = 0
        room = max(first_room, self.size // 2)
        while start < len(text):
            end = min(len(text), start + room)
            if end < len(text):
                window = text[start:end]
                cut = max((m.end() for m in _SENTENCE_END.finditer(window)), default=0)
                if cut < room // 2:
                    cut = window.rfind(" ") + 1
                if cut <= room // 4:
                    cut = len(window)
                end = start + cut
            segment = text[start:end].strip()
            if segment:
                parts.append(
                    _Piece(segment, piece.page, piece.char_start + start, piece.char_start + end, piece.kind, piece.bbox)
                )
            if end >= len(text):
                break
            next_start = max(end - self.overlap, start + 1)
            space = text.find(" ", next_start)
            start = space + 1 if 0 <= space < end else end
            room = self.size
        return parts

    def flush(self, force: bool = False) -> None:
        """Emit the open draft as a chunk. Headings alone wait for their section's first block."""
        if not self.draft.pieces or not (force or self.draft.has_body()):
            return
        draft, self.draft = self.draft, _Draft(heading_path=self._path())
        if self.list_lead is not None:
            self.draft.header_row = self.list_lead  # the next chunk continues the list: repeat its lead-in
        first = draft.pieces[0]
        # A repeated list lead-in is the chunk's first line: the chunk starts where it is on the
        # page (a repeated table header is not counted, as before: its rows are what is located).
        lead = draft.header_row
        start = lead if lead is not None and lead.kind is not BlockKind.table_row and lead.page == first.page else first
        pages = [p.page for p in draft.pieces]
        lines = ([draft.header_row.text] if draft.header_row else []) + [p.text for p in draft.pieces]
        boxes = [p.bbox for p in draft.pieces if p.bbox is not None and p.page == first.page]
        bbox = None
        for box in boxes:
            bbox = box if bbox is None else bbox.union(box)
        last_on_first_page = [p for p in draft.pieces if p.page == first.page][-1]
        kinds = {p.kind for p in draft.pieces if p.kind is not BlockKind.heading}
        ordinal = len(self.chunks)
        self.chunks.append(
            Chunk(
                id=f"{self.doc.id[:16]}:{ordinal}",
                doc_id=self.doc.id,
                ordinal=ordinal,
                text="\n".join(lines),
                page_start=min(pages),
                page_end=max(pages),
                heading_path=list(draft.heading_path),
                char_start=start.char_start,
                char_end=last_on_first_page.char_end,
                kind=kinds.pop() if len(kinds) == 1 else BlockKind.paragraph,
                bbox=bbox,
                title=self.doc.title,
                source=self.doc.source,
                doc_type=self.doc_type,
                publisher=self.doc.publisher,
            )
        )

    def finish(self) -> None:
        self.flush(force=True)  # trailing headings with no body are kept rather than lost
