"""Receipts: company, date, address, total (the SROIE fields), with provenance and confidence."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from docteller.model import ExtractionResult, Field
from docteller.protocols import OcrLine
from ingest.extract.pages import PageContent
from ingest.extract.visual import parse_printed_date

COMPANY_HINT = re.compile(r"\b(SDN\.?\s*BHD|BHD|S/B|ENTERPRISE|TRADING|PLT|LTD|LIMITED|INC|CO\.|COMPANY|RESTAURANT|RESTORAN|STORE|MART|SHOP|BOOK|HARDWARE|PHARMACY|STATIONERY|MARKETING|SUPERMARKET|CAFE|BAKERY|GIFT|KEDAI)\b", re.I)
ADDRESS_END = re.compile(r"\b\d{2,3}-\d{3,4}\s?\d{3,4}\b|\b(TEL|FAX|PHONE|GST|REG|INVOICE|RECEIPT|CASHIER|DATE|EMAIL|E-MAIL|WWW|HTTP|DOC|DOCUMENT|TAX|BILL|TABLE|ORDER|SALES|MEMBER|NO\s*:|H/P)\b|@", re.I)
ADDRESS_HINT = re.compile(r"\b(JALAN|JLN|TAMAN|LOT|NO\.?\s*\d|\d{5}|BATU|LORONG|KAMPUNG|BANDAR|PERSIARAN|STREET|ROAD|AVENUE|SELANGOR|JOHOR|KUALA|LUMPUR|MALAYSIA|PUCHONG|SHAH ALAM|KAJANG|PETALING)\b", re.I)
DATE_RE = re.compile(r"\b(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}\s*[A-Za-z]{3,9}\s*\d{2,4}|\d{4}-\d{2}-\d{2})\b")
MONEY_RE = re.compile(r"(?<![\d.])(?:RM|\$)?\s*(\d{1,3}(?:,\d{3})*\.\d{2})(?![\d])")
TOTAL_LABELS = (
    (re.compile(r"\b(ROUNDED|NETT?|GRAND)\s*TOTAL\b|\bTOTAL\s*(AMOUNT\s*)?(PAYABLE|DUE)\b", re.I), 0.9),
    (re.compile(r"^\W*TOTAL\s*(\(RM\)|RM|AMOUNT|AMT)?\s*[:=]?\s*(RM)?\s*[\d.,]*\s*$", re.I), 0.9),
    (re.compile(r"\bTOTAL\b", re.I), 0.7),
    (re.compile(r"\bAMOUNT\s*(DUE|PAYABLE)\b|\bCASH\b", re.I), 0.4),
)


def _same_row(line: OcrLine, others: list[OcrLine]) -> list[OcrLine]:
    yc = (line.bbox.y0 + line.bbox.y1) / 2
    return sorted(
        (o for o in others if o is not line and abs((o.bbox.y0 + o.bbox.y1) / 2 - yc) < 0.6 * max(line.bbox.height, 1) and o.bbox.x0 >= line.bbox.x0),
        key=lambda o: o.bbox.x0,
    )


def _amount_for(line: OcrLine, phrases: list[OcrLine]) -> tuple[str, OcrLine] | None:
    for candidate in [line, *_same_row(line, phrases)][::-1]:
        found = MONEY_RE.findall(candidate.text.replace(" .", "."))
        if found:
            return found[-1].replace(",", ""), candidate
    return None


def extract_receipt(result: ExtractionResult, pages: list[PageContent]) -> None:
    page = pages[0]
    phrases = page.phrases
    result.doc_type = "receipt"
    src = "ocr" if page.ocr_used else "text"
    # Company: a line with a company-type word near the top, else the first wordy line.
    top = phrases[:10]
    company = next((p for p in top if COMPANY_HINT.search(p.text) and len(p.text) > 4), None)
    if company is None:
        company = next((p for p in top if sum(c.isalpha() for c in p.text) >= 4), None)
    if company is not None:
        result.fields["company"] = Field(name="company", value=company.text.strip(), confidence=round(company.confidence * (0.9 if COMPANY_HINT.search(company.text) else 0.5), 4), page=page.number, bbox=company.bbox, raw=company.text, source=src)
        # Address: the lines after the company (skipping registration numbers) until contact details.
        start = phrases.index(company) + 1
        parts: list[OcrLine] = []
        for p in phrases[start : start + 8]:
            t = p.text.strip()
            if re.fullmatch(r"\(.*\d.*\)|.*\b(CO\.?\s*R[EF]G|COMPANY\s*NO|ROC|GST\s*(ID|REG))\b.*", t, re.I):
                continue  # registration numbers printed under the company name
            if ADDRESS_END.search(t) and not ADDRESS_HINT.search(t):
                break
            if DATE_RE.search(t) and not ADDRESS_HINT.search(t):
                break
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
    # The payable total: the highest-priority label wins, and among equals the last one printed
    # (after "Total Sales (incl. GST)" and "Rounding" comes the rounded "Total").
    best = None
    best_key = None
    for order, p in enumerate(phrases):
        if re.search(r"\bSUB\s*-?\s*TOTAL|\bTOTAL\s*(QTY|QUANTITY|ITEMS?|DISCOUNT|GST|TAX|SAVING)", p.text, re.I):
            continue
        weight = next((w for pattern, w in TOTAL_LABELS if pattern.search(p.text)), None)
        if weight is None:
            continue
        hit = _amount_for(p, phrases)
        if hit and (best_key is None or (weight, order) >= best_key):
            best, best_key = (hit[0], hit[1], weight), (weight, order)
    if best is None:
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
