"""What the side panels show: source pages rendered with highlights, and the extraction tables.

Pure functions of the document model (no Gradio here), so the web UI, the preview route and the
tests render identically. Page images come from `ingest.raster.rasterise` for PDFs, from the
decoded image for photos and scans, and for text sources (Markdown, HTML, DOCX, ...) the passage
itself is typeset onto a page, because there is no original page to show.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from docteller.check_labels import doc_type_name, field_label, plural, with_article
from docteller.model import BBox, CheckStatus, ExtractionResult, Field
from docteller.redact import ValueMasker, mask, masker_for
from ingest.raster import rasterise

logger = logging.getLogger(__name__)

PDF_ZOOM = 1.6  # 72 dpi * 1.6 ~ 115 dpi: readable in a side panel, small enough to send quickly
MAX_PREVIEW_SIDE = 1600  # photos are scaled down to this before boxes are drawn
HIGHLIGHT_FILL = (255, 214, 0, 90)
HIGHLIGHT_EDGE = (230, 150, 0, 255)
FIELD_EDGE = (37, 99, 235, 255)
FIELD_FILL = (37, 99, 235, 40)
SELECTED_EDGE = (220, 38, 38, 255)
SELECTED_FILL = (220, 38, 38, 60)
ROW_EDGE = (22, 163, 74, 255)  # the transaction rows a statement answer used
ROW_FILL = (22, 163, 74, 45)


@dataclass
class Box:
    """A box to draw on a page image, in the page's own units (PDF points or image pixels)."""

    bbox: BBox
    outline: tuple[int, int, int, int] = HIGHLIGHT_EDGE
    fill: tuple[int, int, int, int] = HIGHLIGHT_FILL
    width: int = 3
    label: str | None = None


def resolve_source(source: str, kb_dir: Path | None = None) -> Path | None:
    """Find the file a chunk came from: absolute, or relative to the KB folder. A relative name
    is never looked up in the working directory (a staff upload named 'pyproject.toml' must not
    preview the server's own file)."""
    if not source:
        return None
    candidate = Path(source)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    if kb_dir is not None and ".." not in candidate.parts:
        for path in (kb_dir / candidate, kb_dir / candidate.name):
            if path.is_file():
                return path
    return None


def draw_boxes(image: Image.Image, boxes: list[Box], scale: float = 1.0) -> Image.Image:
    """Translucent boxes over a copy of `image`; `scale` maps box units to image pixels."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    w, h = base.size
    font = ImageFont.load_default(size=max(12, round(h / 60)))
    for box in boxes:
        x0 = max(0.0, min(w - 1.0, box.bbox.x0 * scale))
        y0 = max(0.0, min(h - 1.0, box.bbox.y0 * scale))
        x1 = max(x0 + 1, min(float(w), box.bbox.x1 * scale))
        y1 = max(y0 + 1, min(float(h), box.bbox.y1 * scale))
        pad = 2
        rect = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        draw.rectangle(rect, fill=box.fill, outline=box.outline, width=box.width)
        if box.label:
            top = max(0, rect[1] - font.size - 4)
            label_box = draw.textbbox((rect[0], top), box.label, font=font)
            draw.rectangle(label_box, fill=(255, 255, 255, 230))
            draw.text((rect[0], top), box.label, fill=box.outline, font=font)
    return Image.alpha_composite(base, overlay).convert("RGB")


def _pdf_page_image(
    doc, page_number: int, boxes: list[Box], zoom: float = PDF_ZOOM, focus: BBox | None = None
) -> Image.Image:
    """Render a page with boxes; `focus` crops to that region (plus a margin) so small print is legible."""
    import pymupdf as fitz

    index = min(max(page_number, 1), doc.page_count) - 1
    page = doc[index]
    clip = None
    if focus is not None:
        margin = 72.0  # an inch of context above and below
        rect = fitz.Rect(focus.x0 - margin, focus.y0 - margin, focus.x1 + margin, focus.y1 + margin)
        rect.x0, rect.x1 = page.rect.x0, page.rect.x1  # keep full lines: context to the left and right
        clip = rect & page.rect
        if clip.is_empty or clip.height < 120:
            clip = None
    if clip is not None:
        image = rasterise(page, 72 * zoom, clip=clip)
        shifted = [
            Box(bbox=BBox(x0=b.bbox.x0 - clip.x0, y0=b.bbox.y0 - clip.y0, x1=b.bbox.x1 - clip.x0, y1=b.bbox.y1 - clip.y0),
                outline=b.outline, fill=b.fill, width=b.width, label=b.label)
            for b in boxes
        ]
        return draw_boxes(image, shifted, scale=zoom)
    return draw_boxes(rasterise(page, 72 * zoom), boxes, scale=zoom)


def passage_boxes_on_pdf_page(page, text: str, bbox: BBox | None = None, max_lines: int = 40) -> list[BBox]:
    """Where a passage sits on a PDF page: its recorded box, else a text search of its lines.

    Chunk text is normalised (whitespace, hyphenation), so each line is searched on its own and
    only lines that are long enough to be distinctive are used.
    """
    if bbox is not None and bbox.width > 1 and bbox.height > 1:
        return [bbox]
    found: list[BBox] = []
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 12]
    for line in lines[:max_lines]:
        probe = line[:80]
        for rect in page.search_for(probe, quads=False):
            found.append(BBox(x0=rect.x0, y0=rect.y0, x1=rect.x1, y1=rect.y1))
    if not found and text.strip():
        # A paragraph flowed onto one line in the chunk: search its first words instead.
        words = text.split()
        for size in (10, 6, 4):
            if len(words) >= size:
                for rect in page.search_for(" ".join(words[:size]), quads=False):
                    found.append(BBox(x0=rect.x0, y0=rect.y0, x1=rect.x1, y1=rect.y1))
                if found:
                    break
    return found


def render_pdf_passage(path: Path, page_number: int, text: str, bbox: BBox | None = None) -> Image.Image:
    """The cited PDF page with the passage highlighted."""
    from ingest.sniff import open_pdf

    doc = open_pdf(path)
    try:
        index = min(max(page_number, 1), doc.page_count) - 1
        rects = passage_boxes_on_pdf_page(doc[index], text, bbox)
        focus = None
        for rect in rects:
            focus = rect if focus is None else focus.union(rect)
        # Crop to the passage (with context) unless it fills most of the page anyway.
        if focus is not None and focus.height > 0.6 * doc[index].rect.height:
            focus = None
        return _pdf_page_image(doc, index + 1, [Box(bbox=r) for r in rects], focus=focus)
    finally:
        doc.close()


def render_text_card(title: str, text: str, subtitle: str = "") -> Image.Image:
    """Typeset a passage from a text source (Markdown, HTML, DOCX, ...) as a page image.

    There is no original page to photograph, so the passage is laid out on a page of its own with
    the document title and location, the passage itself highlighted.
    """
    import pymupdf as fitz

    width, height = 595, 842  # A4 in points
    doc = fitz.open()
    page = doc.new_page(width=width, height=height)
    body = html.escape(text.strip()).replace("\n", "<br/>")
    markup = (
        f"<h3 style='font-family:sans-serif;margin:0 0 4px 0'>{html.escape(title)}</h3>"
        f"<p style='font-family:sans-serif;color:#555;font-size:9pt;margin:0 0 10px 0'>{html.escape(subtitle)}</p>"
        f"<p style='font-family:sans-serif;font-size:10.5pt;line-height:1.35;background-color:#fff3b0;"
        f"padding:6px'>{body}</p>"
    )
    rect = fitz.Rect(36, 36, width - 36, height - 36)
    spare = page.insert_htmlbox(rect, markup, scale_low=0.4)
    used_bottom = height - 36 - (spare[0] if isinstance(spare, tuple) and spare[0] > 0 else 0)
    clip = fitz.Rect(0, 0, width, min(height, max(200.0, used_bottom + 30)))
    image = rasterise(page, 72 * PDF_ZOOM, clip=clip)
    doc.close()
    return image


def render_image_boxes(path: Path, boxes: list[Box]) -> Image.Image:
    """A photo or scan with boxes in its pixel coordinates (after EXIF rotation, as extracted)."""
    from ingest.sniff import open_image

    image = open_image(path)
    scale = min(1.0, MAX_PREVIEW_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    return draw_boxes(image, boxes, scale=scale)


def render_document_page(path: Path, mime: str, page_number: int, boxes: list[Box]) -> Image.Image:
    """Page `page_number` of an uploaded PDF or image with `boxes` drawn on it.

    A PDF page is cropped to the region holding the boxes: statement headers are small print on
    a big page, and the side panel is narrow.
    """
    if mime == "application/pdf":
        from ingest.sniff import open_pdf

        focus = None
        for box in boxes:
            focus = box.bbox if focus is None else focus.union(box.bbox)
        doc = open_pdf(path)
        try:
            return _pdf_page_image(doc, page_number, boxes, focus=focus)
        finally:
            doc.close()
    return render_image_boxes(path, boxes)


def render_passage(
    path: Path | None, mime: str | None, *, title: str, page: int, text: str, bbox: BBox | None = None
) -> Image.Image:
    """The best picture of a cited passage that the source allows."""
    try:
        if path is not None and mime == "application/pdf":
            return render_pdf_passage(path, page, text, bbox)
        if path is not None and mime and mime.startswith("image/"):
            return render_image_boxes(path, [Box(bbox=bbox)] if bbox else [])
    except Exception as exc:  # a source moved or became unreadable: fall back to the passage text
        logger.warning("could not render %s page %s: %s", path, page, exc)
    return render_text_card(title, text, subtitle=f"page {page}" if page else "")


# --- Extraction tables ----------------------------------------------------------------------


def display_value(field: Field, masker: ValueMasker | None = None) -> str:
    """What the UI shows for a field: account and document numbers masked, by field and by value
    (a document number misread into another field is masked there too)."""
    if field.value is None:
        return "—"
    if field.sensitive:
        return mask(field.value)
    return masker.text(field.value) if masker else field.value


def masked_extraction_json(result: ExtractionResult) -> dict:
    """`result.as_json()` with every document/account number masked wherever its value appears."""
    data = masker_for([result]).json(result.as_json())
    for name, f in result.fields.items():
        if f.sensitive and f.value:
            data["fields"][name]["value"] = mask(f.value)
    data["masked"] = True
    return data


def field_problems(result: ExtractionResult) -> dict[str, list[str]]:
    """Field name -> labels of the failed checks that name it (e.g. `check_digit_document_number`).

    Only failures: a check that could not be made ("not read") says nothing against a field."""
    problems: dict[str, list[str]] = {}
    for check_name, check in result.checks.items():
        if check.ok is not False:
            continue
        haystack = f"{check_name} {check.detail}".lower()
        for field_name in result.fields:
            if field_name.lower() in haystack:
                problems.setdefault(field_name, []).append(check.label)
    return problems


def uncertain_below() -> float:
    from docteller.settings import get_settings

    return get_settings().uncertain_below


def extraction_summary(name: str, result: ExtractionResult) -> str:
    """What the chat says after reading an upload (Markdown): type, counts, check verdicts."""
    kind = with_article(doc_type_name(result.doc_type))
    parts = [f"I read **{name}** as {kind} ({plural(result.pages or 1, 'page')})"]
    if result.fields:
        parts.append(plural(len(result.fields), "field"))
    if result.transactions:
        parts.append(plural(len(result.transactions), "transaction"))
    text = ", ".join(parts) + "."
    if result.checks:
        failed = result.checks_with(CheckStatus.failed)
        not_read = result.checks_with(CheckStatus.not_read)
        passed = result.checks_with(CheckStatus.passed)
        text += f" Checks: {len(passed)} passed"
        if failed:
            text += f", **{len(failed)} failed** ({', '.join(c.label for c in failed)})"
        if not_read:
            text += f", {len(not_read)} not checked because a value was not read ({', '.join(c.label for c in not_read)})"
        text += "."
    uncertain = [field_label(n) for n, f in result.fields.items() if f.uncertain(uncertain_below())]
    if uncertain:
        text += f" Not certain, please check: {', '.join(uncertain)}."
    if result.warnings:
        text += " " + " ".join(w.rstrip(".") + "." for w in result.warnings[:2])
    return text


def document_heading(name: str, result: ExtractionResult) -> str:
    """The My documents panel's one-line summary of an upload (Markdown)."""
    return (
        f"**{name}** — {doc_type_name(result.doc_type)}, {plural(result.pages or 1, 'page')}, "
        f"read in {result.seconds:.1f} s"
    )


_TABLE_CSS = (
    "<style>"
    ".dt-table{border-collapse:collapse;width:100%;font-size:13px}"
    ".dt-table th{text-align:left;background:var(--background-fill-secondary,#f3f4f6);padding:4px 6px}"
    ".dt-table td{border-top:1px solid var(--border-color-primary,#e5e7eb);padding:4px 6px;vertical-align:top}"
    ".dt-table tr.dt-bad td{background:rgba(220,38,38,.12)}"
    ".dt-table tr.dt-warn td{background:rgba(234,179,8,.15)}"
    ".dt-table tr.dt-user td{background:rgba(37,99,235,.08)}"
    ".dt-ok{color:#15803d;font-weight:600}.dt-fail{color:#b91c1c;font-weight:600}"
    ".dt-neutral{color:#6b7280;font-weight:600}"
    ".dt-muted{color:#6b7280;font-size:12px}"
    ".dt-scroll{max-height:340px;overflow-y:auto;border:1px solid var(--border-color-primary,#e5e7eb);"
    "border-radius:6px}"
    ".dt-table thead th{position:sticky;top:0;z-index:1}"
    "</style>"
)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def fields_html(result: ExtractionResult) -> str:
    """The fields table: value (masked where sensitive), confidence, source; problems highlighted."""
    if not result.fields:
        return _TABLE_CSS + "<p class='dt-muted'>No fields were found in this document.</p>"
    problems = field_problems(result)
    masker = masker_for([result])
    below = uncertain_below()
    rows = []
    for name, field in result.fields.items():
        css = ""
        note = ""
        if name in problems:
            # A correction that the document contradicts (the printed zone says otherwise) is both.
            mine = "corrected by you; " if field.source == "user" else ""
            css, note = "dt-bad", mine + "fails: " + ", ".join(problems[name])
        elif field.source == "user":
            css, note = "dt-user", "corrected by you"
        elif field.uncertain(below):
            guessed = "guessed" if field.source == "inferred" else "read"
            css, note = "dt-warn dt-uncertain", f"? not certain ({guessed} with {field.confidence:.0%} confidence): please check"
        rows.append(
            f"<tr class='{css}' data-field='{_esc(name)}'><td>{_esc(field_label(name))}</td>"
            f"<td><b>{_esc(display_value(field, masker))}</b>"
            + (f"<div class='dt-muted'>{_esc(note)}</div>" if note else "")
            + f"</td><td>{field.confidence:.0%}</td>"
            f"<td>{_esc(field.source)}{'' if field.page is None else f' p.{field.page}'}</td></tr>"
        )
    return (
        _TABLE_CSS
        + "<div class='dt-scroll'><table class='dt-table dt-fields'><thead><tr><th>Field</th><th>Value</th>"
        "<th>Conf.</th><th>Source</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


_CHECK_MARKS = {
    CheckStatus.failed: ("dt-bad", "<span class='dt-fail'>✗ fail</span>"),
    CheckStatus.not_read: ("dt-notread", "<span class='dt-neutral'>– not read</span>"),
    CheckStatus.passed: ("", "<span class='dt-ok'>✓ pass</span>"),
}
_CHECK_ORDER = {CheckStatus.failed: 0, CheckStatus.not_read: 1, CheckStatus.passed: 2}


def checks_html(result: ExtractionResult) -> str:
    """Check results (MRZ check digits, expiry, printed-vs-MRZ, reconciliation) under their plain
    names: pass, fail, or "not read" (a value the check needs was not read: neither ✓ nor ✗)."""
    if not result.checks and not result.warnings:
        return ""
    rows = []
    masker = masker_for([result])
    # Failures first: they are what the customer (and the agent) must act on.
    for name, check in sorted(result.checks.items(), key=lambda item: _CHECK_ORDER[item[1].status]):
        css, mark = _CHECK_MARKS[check.status]
        rows.append(
            f"<tr class='{css}' data-check='{_esc(name)}' data-status='{check.status.value}'>"
            f"<td>{_esc(check.label)}</td><td>{mark}</td><td class='dt-muted'>{_esc(masker.text(check.detail))}</td></tr>"
        )
    warnings = "".join(f"<li>{_esc(masker.text(w))}</li>" for w in result.warnings)
    failed = len(result.checks_with(CheckStatus.failed))
    not_read = len(result.checks_with(CheckStatus.not_read))
    heading = (
        f"<p><b>Checks:</b> {len(result.checks_with(CheckStatus.passed))} passed"
        + (f", <span class='dt-fail'>{failed} failed</span>" if failed else "")
        + (f", <span class='dt-neutral'>{not_read} not read</span>" if not_read else "")
        + "</p>"
    )
    table = (
        heading + "<div class='dt-scroll'><table class='dt-table dt-checks'><thead><tr><th>Check</th>"
        "<th>Result</th><th>Detail</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        if rows
        else ""
    )
    return _TABLE_CSS + table + (f"<ul class='dt-muted'>{warnings}</ul>" if warnings else "")


def transactions_html(result: ExtractionResult, limit: int = 500) -> str:
    """Statement transactions; rows that break the running balance are marked."""
    if not result.transactions:
        return ""
    rows = []
    masker = masker_for([result])
    for tx in result.transactions[:limit]:
        if tx.row_ok is False:
            css, mark = "dt-bad", "<span class='dt-fail' title='balance does not follow'>✗</span>"
        elif tx.row_ok:
            css, mark = "", "<span class='dt-ok'>✓</span>"
        else:
            css, mark = "", ""
        rows.append(
            f"<tr class='{css}'><td>{_esc(tx.date)}</td><td>{_esc(masker.text(tx.description))}</td>"
            f"<td style='text-align:right'>{_esc(tx.amount)}</td>"
            f"<td style='text-align:right'>{_esc(tx.balance)}</td><td>{mark}</td></tr>"
        )
    broken = sum(1 for tx in result.transactions if tx.row_ok is False)
    more = len(result.transactions) - limit
    summary = (
        f"<p class='dt-muted'>{len(result.transactions)} transactions"
        + (f", <span class='dt-fail'>{broken} break the running balance</span>" if broken else "")
        + (f" (first {limit} shown)" if more > 0 else "")
        + "</p>"
    )
    return (
        _TABLE_CSS
        + summary
        + "<div class='dt-scroll'><table class='dt-table dt-transactions'><thead><tr><th>Date</th>"
        "<th>Description</th><th>Amount</th><th>Balance</th><th>Bal.</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


REDACT_FILL = (55, 65, 81, 255)


def redaction_boxes(result: ExtractionResult, page: int) -> list[Box]:
    """Opaque boxes over every place a document or account number shows on the page preview:
    the sensitive fields, the MRZ zone (it spells the number out), and any other field whose
    value holds a sensitive value (a number misread as another field)."""
    masker = masker_for([result])
    boxes = []
    for field in result.fields.values():
        if field.bbox is None or (field.page or 1) != page:
            continue
        if field.sensitive or field.source == "mrz" or masker.contains(field.value) or masker.contains(field.raw):
            boxes.append(Box(bbox=field.bbox, outline=REDACT_FILL, fill=REDACT_FILL, width=1))
    for spot in result.redactions:  # the number printed where no field was read from it
        if spot.page == page:
            boxes.append(Box(bbox=spot.bbox, outline=REDACT_FILL, fill=REDACT_FILL, width=1))
    return boxes


def field_boxes(result: ExtractionResult, page: int, selected: str | None = None) -> list[Box]:
    """Boxes of the fields on `page` (1-based); the selected field stands out."""
    boxes = []
    for name, field in result.fields.items():
        if field.bbox is None or (field.page or 1) != page:
            continue
        chosen = name == selected
        boxes.append(
            Box(
                bbox=field.bbox,
                outline=SELECTED_EDGE if chosen else FIELD_EDGE,
                fill=SELECTED_FILL if chosen else FIELD_FILL,
                width=4 if chosen else 2,
                label=name.replace("_", " ") if chosen else None,
            )
        )
    # The selected box is drawn last, on top of the others; then sensitive numbers are blanked
    # (the overlay is painted, not blended, so the blank must come after any translucent box).
    boxes.sort(key=lambda b: b.outline == SELECTED_EDGE)
    return boxes + redaction_boxes(result, page)


def cited_row_boxes(result: ExtractionResult, page: int, boxes: list[BBox]) -> list[Box]:
    """The rows a statement answer used, outlined on `page`, sensitive numbers still blanked."""
    outlined = [Box(bbox=b, outline=ROW_EDGE, fill=ROW_FILL, width=3) for b in boxes]
    return outlined + redaction_boxes(result, page)


def render_cited_rows(path: Path, mime: str, result: ExtractionResult, page: int, boxes: list[BBox]) -> Image.Image:
    """The cited page of an upload with the answer's rows outlined (cropped around them on a PDF,
    not around the blanked account number as well)."""
    drawn = cited_row_boxes(result, page, boxes)
    if mime != "application/pdf":
        return render_image_boxes(path, drawn)
    from ingest.sniff import open_pdf

    focus = None
    for box in boxes:
        focus = box if focus is None else focus.union(box)
    doc = open_pdf(path)
    try:
        return _pdf_page_image(doc, page, drawn, focus=focus)
    finally:
        doc.close()
