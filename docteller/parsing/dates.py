"""Dates as printed on documents and named in questions, with one month table.

`parse_date_parts` reads a statement's date cell (strict: the whole token must be a date, a
year may be missing); `parse_printed_date` finds a date inside an ID's printed text;
`find_date` finds the date a customer's question names. `dateutil.parser` is not used: it
turns any lone number or month name into a date, and these readers must tell a date from a
reference number or a description.
"""

from __future__ import annotations

import datetime as dt
import re

from docteller.parsing.text import fold

MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
               "october", "november", "december")
# Folded (lowercase, no accents) month names and abbreviations as printed in English, French,
# Dutch and German documents.
MONTHS: dict[str, int] = {name: n for n, name in enumerate(MONTH_NAMES, start=1)}
MONTHS.update({name[:3]: n for n, name in enumerate(MONTH_NAMES, start=1)})
MONTHS.update({
    "sept": 9, "janv": 1, "fev": 2, "fevr": 2, "mars": 3, "avr": 4, "mai": 5, "juin": 6, "juil": 7, "aout": 8,
    "mei": 5, "mrt": 3, "okt": 10,
})


def month_number(name: str) -> int | None:
    """'Mar', 'MARS', 'févr.', 'August' -> the month's number, else None."""
    return MONTHS.get(fold(name).strip().rstrip("."))


def full_year(text: str | int, today: dt.date | None = None) -> int:
    """A printed year: two digits are this century unless that is more than 20 years ahead."""
    y = int(text)
    if y >= 100:
        return y
    this_year = (today or dt.date.today()).year
    return 2000 + y if 2000 + y <= this_year + 20 else 1900 + y


def iso_date(y: int, m: int, d: int) -> str | None:
    try:
        return dt.date(y, m, d).isoformat()
    except ValueError:
        return None


# A date cell as statements print it: 2024-03-01, 01/03/2024, 01.03, 1 Mar 24, Mar 1, 2024.
_CELL_PATTERNS = [
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})$"),
    re.compile(r"^(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<y>\d{2,4})$"),
    re.compile(r"^(?P<a>\d{1,2})[/.](?P<b>\d{1,2})$"),
    re.compile(r"^(?P<d>\d{1,2})[ -]?(?P<mon>[A-Za-zéû]{3,5}\.?)(?:[ -]?(?P<y>\d{2,4}))?$"),
    re.compile(r"^(?P<mon>[A-Za-z]{3})[ -]?(?P<d>\d{1,2})(?:,? (?P<y>\d{4}))?$"),
]


def parse_date_parts(text: str, day_first: bool = True) -> tuple[int, int, int | None] | None:
    """(day, month, year or None) when the whole text is a date cell, else None."""
    t = text.strip().rstrip(",")
    for pattern in _CELL_PATTERNS:
        m = pattern.match(t)
        if not m:
            continue
        g = m.groupdict()
        y = full_year(g["y"]) if g.get("y") else None
        if g.get("mon"):
            month = month_number(g["mon"])
            if not month:
                return None
            day = int(g["d"])
        elif g.get("a"):
            a, b = int(g["a"]), int(g["b"])
            day, month = (a, b) if day_first else (b, a)
        else:
            day, month = int(g["d"]), int(g["m"])
        if 1 <= month <= 12 and 1 <= day <= 31:
            return day, month, y
        return None
    return None


def parse_full_date(text: str, day_first: bool = True) -> str | None:
    """ISO date of a cell that names its year ('1 Mar. 2024', '01/03/2024'), else None."""
    parsed = parse_date_parts(text.replace(".", " ").replace("  ", " ") if re.search(r"[A-Za-z]", text) else text, day_first)
    if not parsed or parsed[2] is None:
        return None
    d, m, y = parsed
    return iso_date(y, m, d)


def uses_day_first(text: str) -> bool:
    """False when a document's numeric dates can only be month first (a second part over 12)."""
    firsts, seconds = [], []
    for a, b in re.findall(r"\b(\d{1,2})/(\d{1,2})(?:/\d{2,4})?\b", text):
        firsts.append(int(a))
        seconds.append(int(b))
    return not (any(v > 12 for v in seconds) and not any(v > 12 for v in firsts))


def parse_printed_date(text: str) -> str | None:
    """'12 AUGUST/AOUT 74', '06.12.1965', '15 APR/AVR 12', '1974-08-12' -> ISO (2-digit year as birth-ish)."""
    t = fold(text).upper()
    m = re.search(r"(\d{4})-(\d{2})-(\d{2})", t)
    if m:
        return iso_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = re.search(r"(\d{1,2})[./ -](\d{1,2})[./ -](\d{2,4})", t)
    if m:
        first, second = int(m.group(1)), int(m.group(2))
        if second > 12 >= first:  # month first (US style, 12/28/2017)
            return iso_date(full_year(m.group(3)), first, second)
        return iso_date(full_year(m.group(3)), second, first)
    m = re.search(r"(\d{1,2})\s*([A-Z]{3,9})(?:\s*/\s*[A-Z]{3,9})?\s*(\d{2,4})", t)
    if m and (month := month_number(m.group(2))):
        return iso_date(full_year(m.group(3)), month, int(m.group(1)))
    return None


def printed_date_readings(text: str) -> set[str]:
    """Every ISO date the printed text can mean: '11/01/94' is 11 January day-first and
    1 November month-first (US documents)."""
    readings = {iso} if (iso := parse_printed_date(text)) else set()
    m = re.search(r"(?<!\d)(\d{1,2})[./ -](\d{1,2})[./ -](\d{2,4})(?!\d)", text)
    if m and int(m.group(1)) <= 12 and int(m.group(2)) <= 12:
        if swapped := iso_date(full_year(m.group(3)), int(m.group(1)), int(m.group(2))):
            readings.add(swapped)
    return readings


def month_in(text: str) -> int | None:
    """The month a question names in full ("in March"), else None."""
    low = text.lower()
    for n, name in enumerate(MONTH_NAMES, start=1):
        if re.search(rf"\b{name}\b", low):
            return n
    return None


_QUESTION_MONTH = "|".join(MONTH_NAMES + tuple(n[:3] for n in MONTH_NAMES))


def find_date(text: str, year_hint: int | None) -> dt.date | None:
    """The date a question names ('2024-03-05', 'on 5 March', 'March 5th, 2024'); a date
    without its year takes `year_hint`."""
    m = re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", text)
    if m:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    low = text.lower()
    m = re.search(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_QUESTION_MONTH})\w*\.?(?:\s+(\d{{4}}))?", low)
    if m:
        day, mon, year = int(m[1]), m[2], m[3]
    else:
        m = re.search(rf"\b({_QUESTION_MONTH})\w*\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?", low)
        if not m:
            return None
        mon, day, year = m[1], int(m[2]), m[3]
    month = MONTHS[mon[:3]]
    year_value = int(year) if year else year_hint
    if year_value is None:
        return None
    try:
        return dt.date(year_value, month, day)
    except ValueError:
        return None
