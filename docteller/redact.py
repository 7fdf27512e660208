"""PII masking: account, card and document numbers never appear whole in logs or the UI."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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


class ValueMasker:
    """Masks given secret values (document and account numbers read from an upload) wherever
    they appear in text, whatever the field, check or message that carries them.

    Masking by field name misses a number misread into another field ("printed expiry date" =
    the passport number) or quoted in a check's detail; masking by value does not. Spaces, dashes
    and MRZ fillers ('<') between characters are tolerated, so '1234 5678' and '1234<5678' match.
    """

    def __init__(self, values: Iterable[str | None], keep: int = 4) -> None:
        self.keep = keep
        secrets = sorted({_compact(v) for v in values if v and "*" not in v and len(_compact(v)) >= 5},
                         key=len, reverse=True)
        self.secrets = tuple(secrets)
        pattern = "|".join(r"[\s\-<]?".join(re.escape(c) for c in s) for s in secrets)
        self._pattern = re.compile(pattern, re.IGNORECASE) if pattern else None

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, value: str | None) -> str:
        if not value or self._pattern is None:
            return value or ""
        return self._pattern.sub(lambda m: mask(m.group(0), self.keep), value)

    def contains(self, value: str | None) -> bool:
        return bool(value and self._pattern is not None and self._pattern.search(value))

    def json(self, data: Any) -> Any:
        """A copy of JSON-like data with every string masked."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {k: self.json(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.json(v) for v in data]
        return data


def _compact(value: str) -> str:
    return re.sub(r"[\s\-<]", "", value)


def masker_for(results: Iterable[Any]) -> ValueMasker:
    """A masker for every sensitive value (as read and as normalised) in extraction results."""
    values: list[str | None] = []
    for result in results:
        for f in result.fields.values():
            if f.sensitive:
                values.extend([f.value, f.raw])
    return ValueMasker(values)
