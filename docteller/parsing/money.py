"""Amounts of money as printed on documents and typed in questions, as `Decimal`.

Two readers share this module: `parse_amount` for a statement or receipt cell, which must tell
an amount from a reference number ('1,234.56', '(12.00)', '90,350 CR', '-€ 5,00'), and
`to_decimal` for a value already known to be a number (a field, a figure in an answer). The
cell reader keeps its own grammar: `price-parser` and `babel` read a price but not a debit
marker (CR/DR, brackets, a trailing minus), which is what statements print.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A statement cell: optional sign or bracket, optional currency, grouped or 2-decimal digits,
# optional closing bracket and CR/DR or trailing minus.
MONEY = re.compile(
    r"^(?P<neg1>[-−(])?\s*(?:[A-Z]{0,3}[$€£¥]|[A-Z]{3})?\s*(?P<neg2>-)?(?P<num>\d{1,3}(?:[,. \u202f]\d{3})+(?:[.,]\d{1,2})?|\d+[.,]\d{2}|\d{1,3}(?:,\d{3})+)\s*(?:[$€£]|[A-Z]{3})?\s*(?P<close>\))?\s*(?P<suffix>CR|DR|Cr|Dr|-)?$"
)
# Amounts with two decimals inside a line of receipt text ("RM 12.30", "$1,234.00").
MONEY_IN_TEXT = re.compile(r"(?<![\d.])(?:RM|\$)?\s*(\d{1,3}(?:,\d{3})*\.\d{2})(?![\d])")
_SYMBOLS = "$€£%"


def parse_amount(text: str, decimal_comma: bool = False) -> Decimal | None:
    """'1,234.56' / '1.234,56' / '(12.00)' / '90,350 CR' / '-€ 5,00' -> signed Decimal, else None."""
    t = text.strip().replace("\u2212", "-")
    m = MONEY.match(t)
    if not m:
        return None
    num = m.group("num")
    if decimal_comma:
        num = num.replace(".", "").replace(" ", "").replace("\u202f", "").replace(",", ".")
    else:
        if re.fullmatch(r"\d+,\d{2}", num):  # a lone comma decimal in a dot document: '5,00'
            num = num.replace(",", ".")
        num = num.replace(",", "").replace(" ", "").replace("\u202f", "")
    try:
        value = Decimal(num)
    except InvalidOperation:
        return None
    negative = (m.group("neg1") in ("-", "−") or m.group("neg2") or (m.group("neg1") == "(" and m.group("close"))
                or (m.group("suffix") or "").upper() in ("DR", "-"))
    return -value if negative else value


def is_credit_marked(text: str) -> bool:
    """'12.00 CR' or '(12.00)': how card statements print a payment or refund."""
    t = text.strip()
    return t.upper().endswith("CR") or (t.startswith("(") and t.endswith(")"))


def to_decimal(value: object) -> Decimal | None:
    """A number written plainly ('1,234.50', '$45', '12%', '-3', a Decimal) as a finite Decimal,
    else None. Equal values compare and hash equal: 45 and 45.00 match in sets."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    cleaned = str(value).strip().strip(_SYMBOLS).replace(",", "").strip()
    if not cleaned or cleaned.count(".") > 1:
        return None
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def amounts_in_text(text: str) -> list[str]:
    """The two-decimal amounts printed in a line, as written without thousands commas."""
    return [a.replace(",", "") for a in MONEY_IN_TEXT.findall(text)]


def uses_decimal_comma(text: str) -> bool:
    """True when a document's amounts use a decimal comma (1.234,56)."""
    comma = len(re.findall(r"\d,\d{2}(?!\d)", text))
    dot = len(re.findall(r"\d\.\d{2}(?!\d)", text))
    return comma > dot


def format_money(value: Decimal, currency: str | None) -> str:
    """'-USD 1,234.50' with a currency code, '$1,234.50' without one."""
    sign = "-" if value < 0 else ""
    prefix = f"{currency} " if currency else "$"
    return f"{sign}{prefix}{abs(value):,.2f}"
