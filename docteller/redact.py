"""PII masking: account, card and document numbers never appear whole in logs or the UI."""

from __future__ import annotations

import re

# Runs of 6+ digits/letters-with-digits, optionally broken by spaces or dashes (IBANs, card
# numbers, passport numbers). Short numbers (amounts, dates, years) are left alone.
_LONG_NUMBER = re.compile(r"\b(?=[A-Z0-9 -]*\d[A-Z0-9 -]*\d)(?:[A-Z0-9][ -]?){6,}[A-Z0-9]\b")


def mask(value: str | None, keep: int = 4) -> str:
    """Mask all but the last `keep` characters: '12345678' -> '****5678'."""
    if not value:
        return ""
    compact = re.sub(r"[\s-]", "", value)
    if len(compact) <= keep:
        return "*" * len(compact)
    return "*" * (len(compact) - keep) + compact[-keep:]


def redact_text(text: str) -> str:
    """Mask every long number-like token in free text (log lines, prompts for audit)."""

    def _sub(m: re.Match[str]) -> str:
        token = m.group(0)
        digits = sum(c.isdigit() for c in token)
        # Dates like 2025-01-31 and amounts like 1,234.56 don't match (punctuation), but a
        # bare 8-digit date would: only mask when most characters are digits or it is long.
        if digits < 5:
            return token
        return mask(token)

    return _LONG_NUMBER.sub(_sub, text)
