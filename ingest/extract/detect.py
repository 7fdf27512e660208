"""Which kind of document is this? Cheap text signals, checked before any heavy parsing."""

from __future__ import annotations

import re

from docteller.model import Page

_STATEMENT = re.compile(r"\b(statement|balance|withdrawals?|deposits?|debit|credit|afschrift|relevé|saldo|solde|transactions?)\b", re.I)
_RECEIPT = re.compile(r"\b(total|subtotal|cash|change|gst|tax|invoice|receipt|qty|amount|rounding|tunai)\b", re.I)
_ID_LABELS = re.compile(r"\b(passport|passeport|surname|given names?|date of birth|nationality|identity|identit[ée]|driver'?s? licen[cs]e|date of expiry)\b", re.I)


def guess_doc_type(pages: list[Page]) -> str:
    """'statement' | 'receipt' | 'form' | 'id' | 'unknown' from the text (MRZ is checked earlier)."""
    text = "\n".join(p.phrase_text for p in pages)
    if not text.strip():
        return "unknown"
    statement_hits = len(set(m.lower() for m in _STATEMENT.findall(text)))
    receipt_hits = len(set(m.lower() for m in _RECEIPT.findall(text)))
    id_hits = len(set(m.lower() for m in _ID_LABELS.findall(text)))
    if id_hits >= 2 and statement_hits < 3:
        return "id"
    if statement_hits >= 3 and re.search(r"balance|saldo|solde", text, re.I):
        return "statement"
    if receipt_hits >= 2 and re.search(r"total", text, re.I):
        return "receipt"
    colon_lines = sum(1 for p in pages for ph in p.phrases if re.search(r":\s*$|:\s+\S", ph.text))
    if colon_lines >= 4:
        return "form"
    if receipt_hits >= 1 and re.search(r"\d+\.\d{2}", text):
        return "receipt"
    return "unknown"
