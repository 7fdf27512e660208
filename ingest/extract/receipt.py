"""Receipts: company, date, address, total (the SROIE fields), with provenance and confidence."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from docteller.model import ExtractionResult, Field
from docteller.protocols import OcrLine
from ingest.extract.pages import PageContent
from ingest.extract.visual import parse_printed_date

COMPANY_HINT = re.compile(r"\b(SDN\.?\s*BHD|BHD|S/B|ENTERPRISE|TRADING|PLT|LTD|LIMITED|INC|CO\.|COMPANY|RESTAURANT|RESTORAN|STORE|MART|SHOP|BOOK|HARDWARE|PHARMACY|STATIONERY|MARKETING|SUPERMARKET|CAFE|BAKERY|GIFT|KEDAI)\b", re.I)
ADDRESS_END = re.compile(r"\b\d{2,3}-\d{3,4}\s?\d{3,4}\b|\b(TEL|TELEPHONE|FAX|PHONE|GST|REG|INVOICE|RECEIPT|CASHIER|DATE|EMAIL|E-MAIL|WWW|HTTP|DOC|DOCUMENT|TAX|BILL|TABLE|ORDER|SALES|MEMBER|NO\s*:|H/P)\b|@", re.I)
ADDRESS_HINT = re.compile(r"\b(JALAN|JLN|TAMAN|LOT|NO\.?\s*\d|\d{5}|BATU|LORONG|KAMPUNG|BANDAR|PERSIARAN|STREET|ROAD|AVENUE|SELANGOR|JOHOR|KUALA|LUMPUR|MALAYSIA|PUCHONG|SHAH ALAM|KAJANG|PETALING)\b", re.I)
DATE_RE = re.compile(r"\b(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}\s*[A-Za-z]{3,9}\s*\d{2,4}|\d{4}-\d{2}-\d{2})\b")
MONEY_RE = re.compile(r"(?<![\d.])(?:RM|\$)?\s*(\d{1,3}(?:,\d{3})*\.\d{2})(?![\d])")
TOTAL_LABELS = (
    (re.compile(r"\b(ROUNDED|NETT?|GRAND)\s*TOTAL\b|\bTOTAL\s*ROUNDED\b|\bTOTAL\s*(AMOUNT\s*)?(PAYABLE|DUE)\b|INCLUSIVE OF GST|INCL\.?\s*GST", re.I), 0.9),
    (re.compile(r"^\W*TOTAL\s*(\(RM\)|RM|AMOUNT|AMT)?\W*(RM)?\s*[\d.,]*\s*$", re.I), 0.9),
    (re.compile(r"\bTOTAL\b", re.I), 0.7),
    (re.compile(r"\bAMOUNT\s*(DUE|PAYABLE)\b|\bCASH\b", re.I), 0.4),
)


NOT_PAYABLE = re.compile(r"\bSUB\s*-?\s*TOTAL|\bTOTAL\s*(QTY|QUANTITY|ITEMS?|DISCOUNT|GST|TAX|SAVING)|EXCLUD|\bCHANGE\b|\bTENDER", re.I)
ROUNDING = re.compile(r"\bROUNDING\b|\bROUND(ING)?\s*ADJ", re.I)


HEADER_WORDS = re.compile(r"\b(TAX\s*INVOICE|INVOICE|RECEIPT|WELCOME|THANK|CASH\s*SALES?)\b", re.I)


def _company_lines(phrases: list[OcrLine], anchor: OcrLine) -> list[OcrLine]:
    """The anchor line plus the lines its name wraps onto (an '&' or '(' left open)."""
    idx = phrases.index(anchor)
    lines = [anchor]
    # Upward: an all-caps name start without digits right above a line ending the name.
    if idx > 0 and COMPANY_HINT.search(anchor.text) and re.match(r"^[A-Z(]", anchor.text):
        prev = phrases[idx - 1]
        if re.fullmatch(r"[A-Z][A-Z .&'-]{2,}", prev.text.strip()) and not HEADER_WORDS.search(prev.text) and anchor.bbox.y0 - prev.bbox.y1 < 1.5 * anchor.bbox.height and not re.search(r"\b(SDN|BHD)\b", prev.text):
            lines.insert(0, prev)
    # Downward: the name continues while it ends in '&' or has an unclosed parenthesis.
    j = idx + 1
    while j < len(phrases) and j <= idx + 2:
        text = " ".join(p.text for p in lines)
        if text.rstrip().endswith("&") or re.search(r"\bSDN\.?$", text.rstrip()) or text.count("(") > text.count(")"):
            lines.append(phrases[j])
            j += 1
            continue
        break
    return lines


def _find_total(page: PageContent) -> tuple[str, OcrLine, float] | None:
    """The payable total as (amount, line, confidence weight).

    Receipts that round print the rounding adjustment and then the payable amount on the next
    row with an amount, whatever its label ("RM 60.30", "Total Sales (incl. GST): 80.90").
    Otherwise the highest-priority total label wins, first occurrence (later "Total:" rows are
    usually a GST summary table).
    """
    rows = [(ln, MONEY_RE.findall(ln.text.replace(" .", "."))) for ln in page.lines()]
    for i, (line, _) in enumerate(rows):
        if ROUNDING.search(line.text):
            for nxt, amounts in rows[i + 1 : i + 3]:
                if amounts and not re.search(r"\bCASH|\bCHANGE|\bCARD\b|\bTENDER", nxt.text, re.I):
                    as_phrase = OcrLine(text=nxt.text, bbox=nxt.bbox, confidence=nxt.confidence)
                    return amounts[-1].replace(",", ""), as_phrase, 0.9
            break
    best = None
    for pattern, weight in TOTAL_LABELS:
        for line, amounts in rows:
            if amounts and pattern.search(line.text) and not NOT_PAYABLE.search(line.text):
                best = (amounts[-1].replace(",", ""), OcrLine(text=line.text, bbox=line.bbox, confidence=line.confidence), weight)
                break
        if best:
            break
    return best


def extract_receipt(result: ExtractionResult, pages: list[PageContent]) -> None:
    page = pages[0]
    phrases = page.phrases
    result.doc_type = "receipt"
    src = "ocr" if page.ocr_used else "text"
    # Company: the line with a company-type word near the top (else the first wordy line),
    # joined with neighbours when the name wraps ("HOME MASTER HARDWARE &" / "ELECTRICAL").
    top = phrases[:10]
    anchor = next((p for p in top if COMPANY_HINT.search(p.text) and len(p.text) > 4), None)
    if anchor is None:
        anchor = next((p for p in top if sum(c.isalpha() for c in p.text) >= 4 and not HEADER_WORDS.search(p.text)), None)
    company_parts = _company_lines(phrases, anchor) if anchor is not None else []
    company = company_parts[-1] if company_parts else None
    if company_parts:
        name = " ".join(p.text.strip() for p in company_parts)
        name = re.sub(r"\s*\(?\b\d{5,}-?\s?[A-Z]\)?\s*$", "", name)  # trailing registration number
        box = company_parts[0].bbox
        for p in company_parts[1:]:
            box = box.union(p.bbox)
        conf = min(p.confidence for p in company_parts) * (0.9 if COMPANY_HINT.search(name) else 0.5)
        result.fields["company"] = Field(name="company", value=name, confidence=round(conf, 4), page=page.number, bbox=box, raw=name, source=src)
        # Address: the lines after the company (skipping registration numbers) until contact details.
        start = phrases.index(company) + 1
        parts: list[OcrLine] = []
        for p in phrases[start : start + 8]:
            t = p.text.strip()
            if re.fullmatch(r"\(.*\d.*\)|.*\b(CO\.?\s*R[EF]G|COMPANY\s*NO|ROC|GST\s*(ID|REG))\b.*", t, re.I):
                continue  # registration numbers printed under the company name
            if ADDRESS_END.search(t) and (not ADDRESS_HINT.search(t) or ADDRESS_END.match(t)):
                break  # contact/invoice details; an address line never starts with them
            if DATE_RE.search(t) and not ADDRESS_HINT.search(t):
                break
            # A company registration number run into the first address line ("789417-W NO.53 ...").
            reg = re.match(r"^(BR\s*No\.?:?\s*)?\(?\d{5,}-?\s?[A-Z]?\)?(\s+|$)", t, re.I)
            if reg and not parts:
                if not t[reg.end() :].strip():
                    continue
                p = OcrLine(text=t[reg.end() :], bbox=p.bbox, confidence=p.confidence)
            if re.search(r"formerly known|licensee of", t, re.I):
                continue
            parts.append(p)
        if parts:
            box = parts[0].bbox
            for p in parts[1:]:
                box = box.union(p.bbox)
            text = " ".join(p.text.strip() for p in parts)
            conf = min(p.confidence for p in parts) * (0.85 if ADDRESS_HINT.search(text) else 0.5)
            result.fields["address"] = Field(name="address", value=text, confidence=round(conf, 4), page=page.number, bbox=box, raw=text, source=src)
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
        amounts = [(Decimal(a.replace(",", "")), p) for p in phrases for a in MONEY_RE.findall(p.text)]
        if amounts:
            value, p = max(amounts, key=lambda t: t[0])
            best = (str(value), p, 0.4)
    if best:
        try:
            value = str(Decimal(best[0]).quantize(Decimal("0.01")))
        except InvalidOperation:
            value = best[0]
        result.fields["total"] = Field(name="total", value=value, confidence=round(best[1].confidence * best[2], 4), page=page.number, bbox=best[1].bbox, raw=best[1].text, source=src)
    if not result.fields:
        result.warnings.append("no fields found: no company, date or total on the receipt")
