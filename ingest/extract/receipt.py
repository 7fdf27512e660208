"""Receipts: company, date, address, total (the SROIE fields), with provenance and confidence."""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import numpy as np

from docteller.model import BBox, ExtractionResult, Field, Page, WordRow
from docteller.parsing.dates import parse_printed_date
from docteller.parsing.money import amounts_in_text, to_decimal
from docteller.parsing.rows import group_rows
from docteller.protocols import OcrLine

log = logging.getLogger(__name__)

COMPANY_HINT = re.compile(r"\b(SDN\.?\s*BHD|BHD|S/B|ENTERPRISE|TRADING|PLT|LTD|LIMITED|INC|CO\.|COMPANY|RESTAURANT|RESTORAN|STORE|MART|SHOP|BOOK|HARDWARE|PHARMACY|STATIONERY|MARKETING|SUPERMARKET|CAFE|BAKERY|GIFT|KEDAI)\b", re.I)
ADDRESS_END = re.compile(r"\b\d{2,3}-\d{3,4}\s?\d{3,4}\b|\b(TEL|TELEPHONE|FAX|PHONE|GST|REG|INVOICE|RECEIPT|CASHIER|DATE|EMAIL|E-MAIL|WWW|HTTP|DOC|DOCUMENT|TAX|BILL|TABLE|ORDER|SALES|MEMBER|NO\s*:|H/P)\b|@", re.I)
# General address cues, no place names: a house, lot or unit number ("NO. 12", "LOT 5", "#02-01",
# "12-1,"), a 5- or 6-digit postcode, or a street-type word (in several languages).
ADDRESS_HINT = re.compile(
    r"\b(?:NO|LOT|UNIT|BLOCK|BLK|SUITE|STE)\.?\s*\d|#\s?\d|\b\d{1,4}[A-Z]?(?:-\d{1,4}[A-Z]?)?\s*,|(?<![\d/.:-])\d{5,6}(?![\d/.:-])"
    r"|\b(?:STREET|ST|ROAD|RD|AVENUE|AVE|LANE|LN|DRIVE|BOULEVARD|BLVD|HIGHWAY|HWY|PLACE|SQUARE|FLOOR|BUILDING|BLDG"
    r"|JALAN|JLN|LORONG|PERSIARAN|LEBUH|RUE|STRASSE|CALLE|AVENIDA|VIA)\b",
    re.I,
)
DATE_RE = re.compile(r"\b(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}\s*[A-Za-z]{3,9}\s*\d{2,4}|\d{4}-\d{2}-\d{2})\b")
TOTAL_LABELS = (
    (re.compile(r"\b(ROUNDED|NETT?|GRAND)\s*TOTAL\b|\bTOTAL\s*(AMOUNT|AMT)?\s*ROUNDED\b|\bTOTAL\s*(AMOUNT\s*)?(PAYABLE|DUE)\b|INCLUSIVE OF GST|INCL\.?\s*(OF\s*)?GST", re.I), 0.9),
    (re.compile(r"^\W*TOTAL\s*(\(RM\)|RM|AMOUNT|AMT)?\W*(RM)?\s*[\d.,]*\s*$", re.I), 0.9),
    (re.compile(r"\bTOTAL\b", re.I), 0.7),
    (re.compile(r"\bAMOUNT\s*(DUE|PAYABLE)\b|\bCASH\b", re.I), 0.4),
)


NOT_PAYABLE = re.compile(r"\bSUB\s*-?\s*TOTAL|\bTOTAL\s*(QTY|QUANTITY|ITEMS?|DISCOUNT|GST|TAX|SAVING|ROUNDING)|EXCL(UD|\b|\.)|\bCHANGE\b|\bTENDER", re.I)
ROUNDING = re.compile(r"\bROUNDING\b|\bROUND(ING)?\s*ADJ", re.I)

# An address line read with less confidence than this earns a second look at the header alone.
REREAD_BELOW = 0.8

HEADER_WORDS = re.compile(r"\b(TAX\s*INVOICE|INVOICE|RECEIPT|WELCOME|THANK|CASH\s*SALES?)\b", re.I)

# Lines that end the shop's header block: after them, a company-type name is a customer or a
# supplier ("GOGIANT ENGINEERING (M) SDN BHD" billed on a hardware shop's receipt).
HEADER_END = re.compile(r"\b(TEL|FAX|PHONE|H/P)\b|\bGST\s*(ID|REG|NO)|\b\d{2,3}-\d{3,4}\s?\d{3,4}\b|TAX\s*INVOICE|\bINVOICE\s*NO", re.I)
# PP-OCR misreads of a leading "LOT" ("10T", "1.0T", "L0T") in Malaysian addresses.
LOT_MISREAD = re.compile(r"^(?:1\.?0|L0|1O|I0)T\b", re.I)
PAYMENT = re.compile(r"^\W*CASH\b(?!\s*(SALES?|BILL|RECEIPT|INVOICE))", re.I)
CHANGE = re.compile(r"^\W*CHANGE\b", re.I)
# A paid total within this of the labelled one is the same total read with an OCR slip, or the
# pre-rounding figure; the amount actually paid is what SROIE and customers call the total.
SLIP_TOLERANCE = Decimal("0.05")


def _overlap_x(a: OcrLine, b: OcrLine) -> float:
    """Horizontal overlap as a fraction of the narrower box."""
    inter = min(a.bbox.x1, b.bbox.x1) - max(a.bbox.x0, b.bbox.x0)
    return max(inter, 0.0) / max(min(a.bbox.width, b.bbox.width), 1.0)


def _centre_y(p: OcrLine) -> float:
    return (p.bbox.y0 + p.bbox.y1) / 2


def reading_order(phrases: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom, left to right; phrases that overlap horizontally are never one row.

    Centred receipt headers have stacked lines of different heights whose centres can fall
    within half a line of each other; a row-band sort alone then puts the lower, wider line
    first ("KLANG SELANGOR" before "BANDAR BUKIT RAJA, 41050").
    """
    rows = group_rows(phrases, fits=lambda row, p: all(_overlap_x(p, q) < 0.3 for q in row))
    return [p for row in rows for p in row]


def _same_row(anchor: OcrLine, phrases: list[OcrLine]) -> list[OcrLine]:
    """Phrases printed on the anchor's row beside it (a name split into two OCR boxes)."""
    h = max(anchor.bbox.height, 1.0)
    return [
        p
        for p in phrases
        if p is not anchor
        and abs(_centre_y(p) - _centre_y(anchor)) < 0.35 * h
        and _overlap_x(p, anchor) < 0.1
        and min(abs(p.bbox.x0 - anchor.bbox.x1), abs(anchor.bbox.x0 - p.bbox.x1)) < 1.5 * h
    ]


def _pick_company_anchor(phrases: list[OcrLine]) -> OcrLine | None:
    """The shop's name: a company-type line in the header block, else its first wordy line."""
    top = phrases[:10]
    end = next((i for i, p in enumerate(top) if HEADER_END.search(p.text)), len(top))
    header = top[:end]

    def hinted(lines: list[OcrLine]) -> OcrLine | None:
        return next((p for p in lines if COMPANY_HINT.search(p.text) and len(p.text) > 4), None)

    def wordy(lines: list[OcrLine]) -> OcrLine | None:
        return next((p for p in lines if sum(c.isalpha() for c in p.text) >= 4 and not HEADER_WORDS.search(p.text)), None)

    return hinted(header) or wordy(header) or hinted(top) or wordy(top)


def _company_lines(phrases: list[OcrLine], anchor: OcrLine) -> list[OcrLine]:
    """The anchor line, the boxes beside it on its row, and the lines its name wraps onto."""
    row = sorted([anchor, *_same_row(anchor, phrases)], key=lambda p: p.bbox.x0)
    first = min(phrases.index(p) for p in row)
    lines = list(row)
    # Upward: an all-caps name start without digits right above a line ending the name.
    if first > 0 and COMPANY_HINT.search(anchor.text) and re.match(r"^[A-Z(]", anchor.text):
        prev = phrases[first - 1]
        if re.fullmatch(r"[A-Z][A-Z .&'-]{2,}", prev.text.strip()) and not HEADER_WORDS.search(prev.text) and anchor.bbox.y0 - prev.bbox.y1 < 1.5 * anchor.bbox.height and not re.search(r"\b(SDN|BHD)\b", prev.text):
            lines.insert(0, prev)
    # Downward: the name continues while it ends in '&' or has an unclosed parenthesis.
    last = max(phrases.index(p) for p in row)
    j = last + 1
    while j < len(phrases) and j <= last + 2:
        text = " ".join(p.text for p in lines)
        if text.rstrip().endswith("&") or re.search(r"\bSDN\.?$", text.rstrip()) or text.count("(") > text.count(")"):
            lines.append(phrases[j])
            j += 1
            continue
        break
    return lines


def _address_lines(phrases: list[OcrLine]) -> list[OcrLine]:
    """The lines after the company name, skipping registration numbers, until contact details."""
    parts: list[OcrLine] = []
    skip_next = False
    for p in phrases[:8]:
        t = p.text.strip()
        if skip_next:
            skip_next = False
            continue
        if re.fullmatch(r"\(.*\d.*\)|.*\b(CO\.?\s*R[EF]G|COMPANY\s*NO|ROC|GST\s*(ID|REG))\b.*", t, re.I):
            continue  # registration numbers printed under the company name
        if ADDRESS_END.search(t) and (not ADDRESS_HINT.search(t) or ADDRESS_END.match(t)):
            break  # contact/invoice details; an address line never starts with them
        if DATE_RE.search(t) and not ADDRESS_HINT.search(t):
            break
        # A company registration number run into the first address line ("789417-W NO.53 ...").
        reg = re.match(r"^(BR\s*No\.?:?\s*)?\(?([A-Z]{1,3}\d{6,}-?\s?[A-Z]|\d{5,}-?\s?[A-Z]?)\)?(\s+|$)", t, re.I)
        if reg and not parts:
            if not t[reg.end() :].strip():
                continue
            p = OcrLine(text=t[reg.end() :], bbox=p.bbox, confidence=p.confidence)
        if re.fullmatch(r"\W*formerly known as\W*", t, re.I):
            skip_next = True  # the former company name follows on its own line
            continue
        if re.search(r"formerly known|licensee of", t, re.I):
            continue
        if not parts and LOT_MISREAD.match(p.text):
            p = OcrLine(text=LOT_MISREAD.sub("LOT", p.text), bbox=p.bbox, confidence=p.confidence)
        parts.append(p)
    return parts


AmountRow = tuple[WordRow, list[str]]


def _labelled_total(rows: list[AmountRow]) -> tuple[str, WordRow, float] | None:
    """The total by its label, as (amount, row, confidence weight).

    Receipts that round print the rounding adjustment and then the payable amount on the next
    row with an amount, whatever its label ("RM 60.30", "Total Sales (incl. GST): 80.90").
    Otherwise the highest-priority total label wins, first occurrence (later "Total:" rows are
    usually a GST summary table).
    """
    for i, (line, _) in enumerate(rows):
        if ROUNDING.search(line.text):
            for nxt, amounts in rows[i + 1 : i + 3]:
                if amounts and not re.search(r"\bCASH|\bCHANGE|\bCARD\b|\bTENDER", nxt.text, re.I):
                    return amounts[-1], nxt, 0.9
            break
    for pattern, weight in TOTAL_LABELS:
        for line, amounts in rows:
            if amounts and pattern.search(line.text) and not NOT_PAYABLE.search(line.text):
                return amounts[-1], line, weight
    return None


def _paid_amount(rows: list[AmountRow]) -> tuple[Decimal, WordRow] | None:
    """Cash handed over minus the change given back, when the receipt prints both."""
    for i, (line, amounts) in enumerate(rows):
        if amounts and PAYMENT.search(line.text):
            for nxt, change in rows[i + 1 : i + 4]:
                if change and CHANGE.search(nxt.text):
                    paid = Decimal(amounts[-1]) - Decimal(change[-1])
                    return (paid, line) if paid > 0 else None
            return None
    return None


def _find_total(page: Page) -> tuple[str, OcrLine, float] | None:
    """The payable total as (amount, line, confidence weight).

    The labelled total is checked against cash minus change: within a few cents they are the
    same total (an OCR slip such as 112.46 for 112.45, or the figure before rounding) and the
    amount paid wins; a weakly labelled total (a bare "TOTAL" row, often a GST summary) that
    disagrees with what was paid loses to it.
    """
    rows = [(ln, amounts_in_text(ln.text.replace(" .", "."))) for ln in page.word_rows()]
    best = _labelled_total(rows)
    paid = _paid_amount(rows)
    if paid is not None:
        amount, line = paid
        if best is None:
            best = (str(amount), line, 0.6)
        elif Decimal(best[0]) != amount and (abs(Decimal(best[0]) - amount) <= SLIP_TOLERANCE or best[2] < 0.9):
            best = (str(amount), line, min(best[2], 0.8))
    if best is None:
        return None
    value, line, weight = best
    return value, OcrLine(text=line.text, bbox=line.bbox, confidence=line.confidence), weight


def _field(name: str, parts: list[OcrLine], text: str, weight: float, page: Page) -> Field:
    """A field read from one or more phrases: their union box, the weakest phrase's confidence."""
    box = parts[0].bbox
    for p in parts[1:]:
        box = box.union(p.bbox)
    conf = min(p.confidence for p in parts) * weight
    return Field(name=name, value=text, confidence=round(conf, 4), page=page.number, bbox=box, raw=text, source="ocr" if page.ocr_used else "text")


def _header(phrases: list[OcrLine]) -> tuple[list[OcrLine], list[OcrLine]]:
    """(company lines, address lines) from phrases in reading order.

    Company: the line with a company-type word in the header (else its first wordy line),
    joined with neighbours when the name wraps ("HOME MASTER HARDWARE &" / "ELECTRICAL").
    """
    anchor = _pick_company_anchor(phrases)
    if anchor is None:
        return [], []
    company = _company_lines(phrases, anchor)
    start = max(phrases.index(p) for p in company) + 1
    return company, _address_lines(phrases[start:])


def _reread_header(page: Page, lines: list[OcrLine]) -> list[OcrLine] | None:
    """The shop's header block OCR'd again on its own, in page coordinates and reading order.

    On its own the block fills the detector's input, so small or faint print gets boxes and
    crops at a larger scale than in the whole-receipt reading.
    """
    if page.image is None or not page.ocr_used or page.rotation or not page.ocr_engine:
        return None
    from ingest.ocr import get_ocr_engine

    box = lines[0].bbox
    for p in lines[1:]:
        box = box.union(p.bbox)
    scale = page.image.shape[1] / page.width  # the kept image may be the downscaled one
    pad = 0.5 * lines[0].bbox.height
    top = max(int((box.y0 - pad) * scale), 0)
    bottom = min(int((box.y1 + pad) * scale), page.image.shape[0])
    if bottom - top < 8:
        return None
    reading = get_ocr_engine(page.ocr_engine).read(np.ascontiguousarray(page.image[top:bottom]))
    log.debug("receipt header re-read: %d lines", len(reading.lines))
    placed = [
        OcrLine(text=ln.text, bbox=BBox(x0=ln.bbox.x0 / scale, y0=(ln.bbox.y0 + top) / scale, x1=ln.bbox.x1 / scale, y1=(ln.bbox.y1 + top) / scale), confidence=ln.confidence)
        for ln in reading.lines
    ]
    # The padding shows slivers of the neighbouring lines; only lines centred in the block count.
    return reading_order([p for p in placed if box.y0 <= _centre_y(p) <= box.y1])


def _better_reading(first: tuple[list[OcrLine], list[OcrLine]], second: tuple[list[OcrLine], list[OcrLine]]) -> tuple[list[OcrLine], list[OcrLine]]:
    """Per field, the reading whose least confident line is more confident."""

    def weakest(lines: list[OcrLine]) -> float:
        return min((p.confidence for p in lines), default=0.0)

    return (
        second[0] if weakest(second[0]) > weakest(first[0]) else first[0],
        second[1] if weakest(second[1]) > weakest(first[1]) else first[1],
    )


def extract_receipt(result: ExtractionResult, pages: list[Page]) -> None:
    page = pages[0]
    phrases = reading_order(page.phrases)
    result.doc_type = "receipt"
    src = "ocr" if page.ocr_used else "text"
    company_parts, address_parts = _header(phrases)
    if address_parts and min(p.confidence for p in address_parts) < REREAD_BELOW:
        reread = _reread_header(page, company_parts + address_parts)
        if reread is not None:
            company_parts, address_parts = _better_reading((company_parts, address_parts), _header(reread))
    if company_parts:
        name = " ".join(p.text.strip() for p in company_parts)
        name = re.sub(r"\s*\(?\b\d{5,}-?\s?[A-Z]\)?\s*$", "", name)  # trailing registration number
        result.fields["company"] = _field("company", company_parts, name, 0.9 if COMPANY_HINT.search(name) else 0.5, page)
    if address_parts:
        text = " ".join(p.text.strip() for p in address_parts)
        result.fields["address"] = _field("address", address_parts, text, 0.85 if ADDRESS_HINT.search(text) else 0.5, page)
    for p in phrases:
        m = DATE_RE.search(p.text)
        if m:
            iso = parse_printed_date(m.group(1))
            if iso:
                result.fields["date"] = Field(name="date", value=iso, confidence=round(p.confidence * 0.9, 4), page=page.number, bbox=p.bbox, raw=m.group(1), source=src)
                break
    best = _find_total(page)
    if best is None:
        # No labelled total: the largest amount on the receipt, with low confidence.
        amounts = [(Decimal(a), p) for p in phrases for a in amounts_in_text(p.text)]
        if amounts:
            value, p = max(amounts, key=lambda t: t[0])
            best = (str(value), p, 0.4)
    if best:
        number = to_decimal(best[0])
        value = str(number.quantize(Decimal("0.01"))) if number is not None else best[0]
        result.fields["total"] = Field(name="total", value=value, confidence=round(best[1].confidence * best[2], 4), page=page.number, bbox=best[1].bbox, raw=best[1].text, source=src)
    if not result.fields:
        result.warnings.append("no fields found: no company, date or total on the receipt")
