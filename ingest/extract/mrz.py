"""Machine-readable zones (ICAO 9303): find them in OCR lines, repair OCR confusions, check them.

Formats: TD1 (3 x 30, ID cards), TD2 (2 x 36), TD3 (2 x 44, passports), MRV-A (2 x 44) and
MRV-B (2 x 36) visas, the French national ID card (2 x 36, pre-2021 layout), and two driving
licences outside ICAO 9303: the French one (1 x 30) and the Swiss one (9 + 30 + 30, no check
digits, so only format checks decide its validity). The `mrz` package does the format and
check-digit work (`mrz.checker.*CodeChecker`, `hash_is_ok`); this module only decides which
characters OCR most likely misread.

Repair is positional: a date can only hold digits, a country code only letters, so an `O` read
in a date is a `0` and a `5` in a name is an `S`. Alphanumeric fields (document and personal
numbers) are ambiguous, so their variants are tried against the field's check digit and only a
variant that passes is kept. Every check digit's verdict is reported, repaired or not.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from mrz.base.functions import hash_is_ok

from docteller.check_labels import DIGIT_SUBJECTS, check_label
from docteller.model import BBox
from docteller.parsing.rows import group_rows, row_box
from docteller.protocols import OcrLine
from docteller.redact import redact_text

log = logging.getLogger(__name__)

# --- Field layouts ----------------------------------------------------------------------------
# Character classes per position: A = letters (and '<'), N = digits, X = either, S = sex,
# C = check digit (digit, or '<' for an empty optional field).


@dataclass(frozen=True)
class Layout:
    name: str
    masks: tuple[str, ...]

    @property
    def line_lengths(self) -> tuple[int, ...]:
        return tuple(len(mask) for mask in self.masks)


def _mask(*parts: tuple[str, int]) -> str:
    return "".join(kind * n for kind, n in parts)


LAYOUTS = {
    "TD1": Layout(
        "TD1",
        (
            _mask(("A", 2), ("A", 3), ("X", 9), ("C", 1), ("X", 15)),
            _mask(("N", 6), ("C", 1), ("S", 1), ("N", 6), ("C", 1), ("A", 3), ("X", 11), ("C", 1)),
            _mask(("A", 30)),
        ),
    ),
    "TD2": Layout(
        "TD2",
        (
            _mask(("A", 2), ("A", 3), ("A", 31)),
            _mask(("X", 9), ("C", 1), ("A", 3), ("N", 6), ("C", 1), ("S", 1), ("N", 6), ("C", 1), ("X", 7), ("C", 1)),
        ),
    ),
    "TD3": Layout(
        "TD3",
        (
            _mask(("A", 2), ("A", 3), ("A", 39)),
            _mask(("X", 9), ("C", 1), ("A", 3), ("N", 6), ("C", 1), ("S", 1), ("N", 6), ("C", 1), ("X", 14), ("C", 1), ("C", 1)),
        ),
    ),
    "MRVA": Layout(
        "MRVA",
        (
            _mask(("A", 2), ("A", 3), ("A", 39)),
            _mask(("X", 9), ("C", 1), ("A", 3), ("N", 6), ("C", 1), ("S", 1), ("N", 6), ("C", 1), ("X", 16)),
        ),
    ),
    "MRVB": Layout(
        "MRVB",
        (
            _mask(("A", 2), ("A", 3), ("A", 31)),
            _mask(("X", 9), ("C", 1), ("A", 3), ("N", 6), ("C", 1), ("S", 1), ("N", 6), ("C", 1), ("X", 8)),
        ),
    ),
    "FRENCH_ID": Layout(
        "FRENCH_ID",
        (
            _mask(("A", 2), ("A", 3), ("A", 25), ("X", 6)),
            _mask(("N", 4), ("X", 3), ("N", 5), ("C", 1), ("A", 14), ("N", 6), ("C", 1), ("S", 1), ("C", 1)),
        ),
    ),
    # Document code (letter + digit, e.g. D1), FRA, licence number (2 digits, 2 letters,
    # 5 digits: 13AA00002), its check digit, expiry, surname, composite check digit.
    "FRENCH_DRIVING_LICENSE": Layout(
        "FRENCH_DRIVING_LICENSE",
        (_mask(("A", 1), ("N", 1), ("A", 3), ("N", 2), ("A", 2), ("N", 5), ("C", 1), ("N", 6), ("A", 8), ("C", 1)),),
    ),
    # Licence number (3 alphanumerics, 3 digits, language code, '<<'); FA, CHE/LIE, PIN code,
    # version number, '<<', birth date, fillers; the name line.
    "SWISS_DRIVING_LICENSE": Layout(
        "SWISS_DRIVING_LICENSE",
        (
            _mask(("X", 3), ("N", 3), ("A", 1), ("A", 2)),
            _mask(("A", 2), ("A", 3), ("N", 9), ("N", 3), ("A", 2), ("N", 6), ("A", 5)),
            _mask(("A", 30)),
        ),
    ),
}

# OCR confusions, by what the position can hold.
TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "U": "0", "I": "1", "L": "1", "T": "7", "Z": "2", "S": "5", "B": "8", "G": "6", "A": "4"}
TO_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "8": "B", "6": "G", "4": "A", "7": "T"}
# Alphanumeric positions: both readings are plausible, the check digit decides.
AMBIGUOUS = {"0": "O", "O": "0", "1": "I", "I": "1", "8": "B", "B": "8", "5": "S", "S": "5", "2": "Z", "Z": "2", "6": "G", "G": "6", "D": "0", "Q": "0"}
FILLER_LOOKALIKES = "KC"  # '<' is often read as K or C (and as « by some engines)
MAX_VARIANTS = 256

# ICAO specimen states: valid codes in 9303 examples, never on a real document.
SPECIMEN_STATES = {"UTO": "Utopia"}

_VALID = re.compile(r"^[A-Z0-9<]+$")


def clean_line(text: str) -> str:
    """Uppercase, drop spaces, map guillemets and similar glyphs to the '<' filler."""
    text = text.upper().replace(" ", "")
    for glyph in ("«", "‹", "＜", "〈", "《", "≪"):
        text = text.replace(glyph, "<")
    return text


def looks_like_mrz(text: str) -> bool:
    if len(text) < 20:
        return False
    valid = sum(c.isascii() and (c.isalnum() or c == "<") for c in text)
    if valid < 0.9 * len(text):
        return False
    fillers = text.count("<")
    digits = sum(c.isdigit() for c in text)
    # A name line carries '<' separators; a data line (sometimes filler-free) carries digits.
    return fillers >= 2 or (digits >= 8 and len(text) >= 28 and " " not in text)


# --- Reading ---------------------------------------------------------------------------------


@dataclass
class MrzReading:
    format: str
    lines: list[str]  # corrected, exact length
    raw_lines: list[str]  # as OCR read them (cleaned)
    fields: dict[str, str]  # MRZ values as printed in the zone (dates YYMMDD)
    checks: dict[str, tuple[bool, str]]  # name -> (ok, detail)
    corrections: list[str] = field(default_factory=list)
    confidence: float = 1.0
    bbox: BBox | None = None
    page: int | None = None

    @property
    def check_digits_ok(self) -> bool:
        digits = [ok for name, (ok, _) in self.checks.items() if name.startswith("check_digit")]
        return bool(digits) and all(digits)

    @property
    def valid(self) -> bool:
        return all(ok for ok, _ in self.checks.values())

    def score(self) -> float:
        digits = sum(ok for name, (ok, _) in self.checks.items() if name.startswith("check_digit"))
        formats = sum(ok for name, (ok, _) in self.checks.items() if not name.startswith("check_digit"))
        return digits * 10 + formats - 0.01 * len(self.corrections)


def _fix_positions(line: str, mask: str) -> tuple[str, list[str]]:
    """Apply unambiguous class corrections (digits in N/C positions, letters in A positions)."""
    out = list(line)
    notes = []
    for i, (ch, kind) in enumerate(zip(line, mask)):
        new = ch
        if kind in "NC" and ch in TO_DIGIT:
            new = TO_DIGIT[ch]
        elif kind == "A" and ch in TO_LETTER:
            new = TO_LETTER[ch]
        elif kind == "S" and ch not in "MFX<":
            new = {"H": "M", "N": "M", "E": "F", "P": "F"}.get(ch, ch)
        if new != ch:
            out[i] = new
            notes.append(f"{i}:{ch}->{new}")
    return "".join(out), notes


def _fix_fillers(line: str, mask: str) -> tuple[str, list[str]]:
    """'<' read as K/C: inside a trailing filler run, or alone between two fillers in a name."""
    out = list(line)
    notes = []
    # Trailing run made only of fillers and their look-alikes (at least 3 long, mostly '<').
    m = re.search(r"<[<KC]{2,}$", line)
    if m and m.group(0).count("<") >= len(m.group(0)) / 2:
        for i in range(m.start(), len(line)):
            if out[i] in FILLER_LOOKALIKES and mask[i] in "AX":
                out[i] = "<"
                notes.append(f"{i}:{line[i]}-><")
    # An isolated K/C flanked by fillers in a letters-only zone followed only by fillers
    # ("ANNA<<K<<<<"): a one-letter name part is then more likely a misread filler.
    for i in range(1, len(line) - 1):
        if out[i] in FILLER_LOOKALIKES and mask[i] == "A" and out[i - 1] == "<" and out[i + 1] == "<":
            rest = "".join(out[i + 1 :])
            if set(rest) <= set("<KC") and len(rest) >= 2:
                out[i] = "<"
                notes.append(f"{i}:{line[i]}-><")
    return "".join(out), notes


def _length_variants(line: str, length: int) -> list[str]:
    """Candidates of exact `length`: pad/trim at the end, or grow/shrink a filler run."""
    if len(line) == length:
        return [line]
    diff = length - len(line)
    variants = []
    if diff > 0:
        variants.append(line + "<" * diff)
    else:
        variants.append(line[:length])
    # Filler runs inside the line (OCR often drops or doubles a '<' in a long run).
    for m in re.finditer(r"<{2,}", line):
        if diff > 0:
            variants.append(line[: m.end()] + "<" * diff + line[m.end() :])
        elif m.end() - m.start() + diff >= 1:
            variants.append(line[: m.start()] + "<" * (m.end() - m.start() + diff) + line[m.end() :])
    seen, unique = set(), []
    for v in variants:
        if len(v) == length and v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


def _alnum_variants(value: str, limit: int = 64) -> Iterable[tuple[str, int]]:
    """Variants of an alphanumeric field by swapping OCR-confusable characters, fewest swaps first."""
    positions = [i for i, c in enumerate(value) if c in AMBIGUOUS]
    yield value, 0
    count = 0
    for k in range(1, min(len(positions), 4) + 1):
        for combo in itertools.combinations(positions, k):
            chars = list(value)
            for i in combo:
                chars[i] = AMBIGUOUS[chars[i]]
            yield "".join(chars), k
            count += 1
            if count >= limit:
                return


def _checker(fmt: str, code: str):
    if fmt == "TD1":
        from mrz.checker.td1 import TD1CodeChecker as Checker
    elif fmt == "TD2":
        from mrz.checker.td2 import TD2CodeChecker as Checker
    elif fmt == "TD3":
        from mrz.checker.td3 import TD3CodeChecker as Checker
    elif fmt == "MRVA":
        from mrz.checker.mrva import MRVACodeChecker as Checker
    elif fmt == "MRVB":
        from mrz.checker.mrvb import MRVBCodeChecker as Checker
    else:
        raise ValueError(fmt)
    return Checker(code)


_CHECK_NAMES = {
    "document number hash": "check_digit_document_number",
    "birth date hash": "check_digit_date_of_birth",
    "expiry date hash": "check_digit_expiry_date",
    "optional data hash": "check_digit_personal_number",
    "final hash": "check_digit_composite",
    "document type format": "format_document_type",
    "valid country code": "format_issuing_country",
    "valid nationality code": "format_nationality",
    "birth date": "format_date_of_birth",
    "expiry date": "format_expiry_date",
    "valid genre format": "format_sex",
    "identifier": "format_name",
    "document number format": "format_document_number",
    "optional data format": "format_optional_data",
    "optional data 2 format": "format_optional_data_2",
}

# Plain (pass, fail) details of the format checks the `mrz` package runs.
_FORMAT_DETAILS = {
    "format_document_type": ("the document type code is valid", "the document type code is not a valid code"),
    "format_issuing_country": ("the issuing country is a known country code", "the issuing country is not a known country code"),
    "format_nationality": ("the nationality is a known country code", "the nationality is not a known country code"),
    "format_date_of_birth": ("the date of birth is a calendar date", "the date of birth is not a calendar date"),
    "format_expiry_date": ("the expiry date is a calendar date", "the expiry date is not a calendar date"),
    "format_sex": ("the sex field is M, F or unspecified", "the sex field is not M, F or unspecified"),
    "format_name": ("the name is letters and fillers", "the name is empty or holds characters other than letters"),
    "format_document_number": ("the document number uses MRZ characters only", "the document number holds characters outside the MRZ alphabet"),
    "format_optional_data": ("the optional data uses MRZ characters only", "the optional data holds characters outside the MRZ alphabet"),
    "format_optional_data_2": ("the second optional data uses MRZ characters only", "the second optional data holds characters outside the MRZ alphabet"),
}


def digit_detail(name: str, ok: bool) -> str:
    """'the check digit agrees with the date of birth' — or why it matters when it does not."""
    subject = DIGIT_SUBJECTS.get(name, name.removeprefix("check_digit_").replace("_", " "))
    if ok:
        return f"the check digit agrees with the {subject}"
    return f"the check digit does not agree with the {subject}: a character was misread or altered"


def _plain_check(name: str, ok: bool) -> tuple[bool, str]:
    if name.startswith("check_digit"):
        return ok, digit_detail(name, ok)
    passed, failed = _FORMAT_DETAILS.get(name, (f"{check_label(name)}: passes", f"{check_label(name)}: fails"))
    return ok, passed if ok else failed


# Where each check digit sits: (line index, slice of the checked field, index of the digit).
# The French driving licence is absent: its number's layout is fixed (13AA00002), so the
# positional masks repair it and nothing is left ambiguous.
_HASHED_FIELDS = {
    "TD1": {"check_digit_document_number": (0, slice(5, 14), 14)},
    "TD2": {"check_digit_document_number": (1, slice(0, 9), 9)},
    "TD3": {"check_digit_document_number": (1, slice(0, 9), 9), "check_digit_personal_number": (1, slice(28, 42), 42)},
    "MRVA": {"check_digit_document_number": (1, slice(0, 9), 9)},
    "MRVB": {"check_digit_document_number": (1, slice(0, 9), 9)},
}


def _evaluate_icao(fmt: str, lines: list[str]) -> tuple[dict[str, str], dict[str, tuple[bool, str]]] | None:
    try:
        checker = _checker(fmt, "\n".join(lines))
    except Exception as exc:  # the mrz package raises plain exceptions on malformed input
        log.debug("mrz %s rejected: %s", fmt, redact_text(str(exc)))
        return None
    checks: dict[str, tuple[bool, str]] = {}
    for description, ok in checker.report.fields:
        name = _CHECK_NAMES.get(description)
        if name is None:  # a check a newer `mrz` release added: not one of ours (`CheckName`)
            log.debug("mrz: unknown check %r left out", description)
            continue
        checks[name] = _plain_check(name, bool(ok))
    f = checker.fields()
    fields = {
        "document_type": f.document_type,
        "issuing_country": f.country,
        "surname": f.surname,
        "given_names": f.name,
        "document_number": f.document_number,
        "nationality": f.nationality,
        "date_of_birth": f.birth_date,
        "sex": f.sex,
        "expiry_date": f.expiry_date,
        "optional_data": getattr(f, "optional_data", "") or "",
    }
    # The package renders an absent name part as the string "None".
    fields = {k: ("" if v in (None, "None") else str(v)) for k, v in fields.items()}
    if hasattr(f, "optional_data_2"):
        fields["optional_data_2"] = f.optional_data_2 or ""
    if fmt == "TD1" and lines[0][14] == "<" and fields["optional_data"]:
        # Document numbers longer than 9 characters continue in the optional field, and their
        # check digit is the last character before the next filler (ICAO 9303-5, 4.2.4).
        extended = lines[0][5:14] + lines[0][15:30].split("<")[0]
        number, digit = extended[:-1], extended[-1]
        # Issuers differ on whether the '<' at position 15 is part of the checked string
        # (Belgian specimens exist both ways); either computation is a valid reading.
        ok = hash_is_ok(number, digit) or hash_is_ok(number[:9] + "<" + number[9:], digit)
        fields["document_number"] = number
        fields["optional_data"] = lines[0][15:30][len(extended) - 9 :].strip("<")
        checks["check_digit_document_number"] = (ok, digit_detail("check_digit_document_number", ok))
    if fmt == "TD3":
        fields["personal_number"] = fields.pop("optional_data")
    name_zone = lines[0][5:] if fmt != "TD1" else lines[2]
    if not checks.get("format_name", (True, ""))[0] and re.fullmatch(r"<<[A-Z]+(<[A-Z]+)*<*", name_zone):
        # A holder with no primary identifier (mononym printed as given names only) is legal
        # ICAO 9303; the mrz package rejects names that begin with '<'.
        checks["format_name"] = (True, "no surname; given names only")
        fields["surname"] = ""
        fields["given_names"] = " ".join(part for part in name_zone[2:].split("<") if part)
    return fields, checks


def _check_digit(name: str, value: str, digit: str) -> tuple[bool, str]:
    try:
        ok = bool(_VALID.match(value)) and digit.isdigit() and hash_is_ok(value, digit)
    except Exception:  # hash_is_ok raises on characters outside the MRZ alphabet
        ok = False
    return ok, digit_detail(name, ok)


def _format_check(ok: bool, passed: str, failed: str) -> tuple[bool, str]:
    # Details reach the user: they never quote the document number (it is sensitive).
    return ok, passed if ok else failed


def _evaluate_french_id(lines: list[str]) -> tuple[dict[str, str], dict[str, tuple[bool, str]]] | None:
    l1, l2 = lines
    if not (l1.startswith("ID") and l1[2:5] == "FRA"):
        return None
    checks: dict[str, tuple[bool, str]] = {}
    for name, value, digit in (
        ("check_digit_document_number", l2[0:12], l2[12]),
        ("check_digit_date_of_birth", l2[27:33], l2[33]),
        ("check_digit_composite", l1 + l2[0:35], l2[35]),
    ):
        checks[name] = _check_digit(name, value, digit)
    sex_ok = l2[34] in "MF"
    checks["format_sex"] = (sex_ok, "the sex field is M or F" if sex_ok else f"the sex field {l2[34]!r} is not M or F")
    birth_ok = _yymmdd_ok(l2[27:33])
    checks["format_date_of_birth"] = (birth_ok, "the date of birth is a calendar date" if birth_ok else "the date of birth is not a calendar date")
    names_ok = bool(re.fullmatch(r"[A-Z<]+", l1[5:30])) and bool(re.fullmatch(r"[A-Z<]+", l2[13:27]))
    checks["format_name"] = (names_ok, "the names are letters and fillers" if names_ok else "the names hold characters other than letters")
    fields = {
        "document_type": "ID",
        "issuing_country": "FRA",
        "surname": l1[5:30].strip("<").replace("<", " ").strip(),
        "given_names": re.sub(r"<+", " ", l2[13:27].strip("<")).strip().replace("  ", ", "),
        "document_number": l2[0:12],
        "nationality": "FRA",
        "date_of_birth": l2[27:33],
        "sex": l2[34],
        "expiry_date": "",
        "optional_data": l1[30:36].strip("<"),
    }
    return fields, checks


def _evaluate_french_driving_licence(lines: list[str]) -> tuple[dict[str, str], dict[str, tuple[bool, str]]] | None:
    (line,) = lines
    if line[2:5] != "FRA":
        return None
    # Both check digits cover the zone from its first character: the document-number digit
    # D1FRA + number (0-14), the composite everything before it (0-29).
    checks = {
        "check_digit_document_number": _check_digit("check_digit_document_number", line[0:14], line[14]),
        "check_digit_composite": _check_digit("check_digit_composite", line[0:29], line[29]),
    }
    code = line[0:2]
    checks["format_document_type"] = _format_check(
        code[0] in "ABD" and code[1].isdigit(), f"document code {code} is a licence code", f"document code {code!r} is not a letter A/B/D and a digit"
    )
    checks["format_document_number"] = _format_check(
        bool(re.fullmatch(r"[0-9]{2}[A-Z]{2}[0-9]{5}", line[5:14])),
        "licence number is 2 digits, 2 letters, 5 digits",
        "licence number is not 2 digits, 2 letters, 5 digits",
    )
    checks["format_expiry_date"] = _format_check(_yymmdd_ok(line[15:21]), "expiry date is a calendar date", "expiry date is not a date")
    surname = line[21:29]
    checks["format_name"] = _format_check(
        bool(re.fullmatch(r"[A-Z]+(<[A-Z]+)*<*", surname)), "surname is letters", "surname is empty or contains non-letters"
    )
    fields = {
        "document_type": "driving licence",
        "document_code": code,
        "issuing_country": "FRA",
        "surname": surname.strip("<").replace("<", " "),
        "given_names": "",
        "document_number": line[5:14],
        "nationality": "",
        "date_of_birth": "",
        "sex": "",
        "expiry_date": line[15:21],
        "optional_data": "",
    }
    return fields, checks


def _evaluate_swiss_driving_licence(lines: list[str]) -> tuple[dict[str, str], dict[str, tuple[bool, str]]]:
    l1, l2, l3 = lines
    checks: dict[str, tuple[bool, str]] = {}
    checks["format_document_number"] = _format_check(
        bool(re.fullmatch(r"[A-Z0-9]{3}[0-9]{3}", l1[0:6])), "licence number is 3 letters/digits and 3 digits", "licence number is not 3 letters/digits and 3 digits"
    )
    checks["format_language_code"] = _format_check(l1[6] in "DFIR", f"language code {l1[6]} is D, F, I or R", f"language code {l1[6]!r} is not D, F, I or R")
    checks["format_document_type"] = _format_check(l2[0:2] == "FA", "document code is FA", f"document code {l2[0:2]!r} is not FA")
    checks["format_issuing_country"] = _format_check(l2[2:5] in ("CHE", "LIE"), f"issuer {l2[2:5]} is CHE or LIE", f"issuer {l2[2:5]!r} is not CHE or LIE")
    checks["format_pin_code"] = _format_check(l2[5:14].isdigit(), "PIN code is 9 digits", "PIN code is not 9 digits")
    checks["format_version_number"] = _format_check(l2[14:17].isdigit(), "version number is 3 digits", f"version number {l2[14:17]!r} is not 3 digits")
    checks["format_date_of_birth"] = _format_check(_yymmdd_ok(l2[19:25]), "birth date is a calendar date", "birth date is not a date")
    fillers_ok = l1[7:9] == "<<" and l2[17:19] == "<<" and l2[25:30] == "<<<<<"
    checks["format_fillers"] = _format_check(fillers_ok, "separators are fillers", "a separator position holds something other than '<'")
    checks["format_name"] = _format_check(
        bool(re.fullmatch(r"[A-Z]+(<[A-Z]+)*(<<[A-Z]+(<[A-Z]+)*)?<*", l3)), "names are letters", "names are empty or contain non-letters"
    )
    surname, _, given = l3.partition("<<")
    fields = {
        "document_type": "driving licence",
        "document_code": l2[0:2],
        "issuing_country": l2[2:5],
        "surname": surname.replace("<", " ").strip(),
        "given_names": re.sub(r"<+", " ", given).strip(),
        "document_number": l1[0:7],
        "nationality": "",
        "date_of_birth": l2[19:25],
        "sex": "",
        "expiry_date": "",
        "optional_data": "",
        "language_code": l1[6],
        "pin_code": l2[5:14],
        "version_number": l2[14:17],
    }
    return fields, checks


def _yymmdd_ok(value: str) -> bool:
    if not re.fullmatch(r"\d{6}", value):
        return False
    try:
        date(2000 + int(value[0:2]), int(value[2:4]), int(value[4:6]))
    except ValueError:
        return False
    return True


def _evaluate(fmt: str, lines: list[str]):
    if fmt == "FRENCH_ID":
        return _evaluate_french_id(lines)
    if fmt == "FRENCH_DRIVING_LICENSE":
        return _evaluate_french_driving_licence(lines)
    if fmt == "SWISS_DRIVING_LICENSE":
        return _evaluate_swiss_driving_licence(lines)
    return _evaluate_icao(fmt, lines)


def _formats_for(lines: list[str]) -> list[str]:
    n = len(lines)
    length = round(sum(len(l) for l in lines) / max(n, 1))
    first = lines[0]
    if n == 3 and min(len(l) for l in lines) >= 26:
        return ["TD1"]
    # The Swiss licence's short first line (9) keeps it apart from TD1 (3 x 30).
    if n == 3 and len(first) <= 12 and min(len(l) for l in lines[1:]) >= 26:
        return ["SWISS_DRIVING_LICENSE"]
    # A lone 30-character line: only the French licence (D1FRA...). Its code's digit (or the
    # I/L OCR reads for a 1) keeps out a TD1 first line read alone, which has a letter or '<'
    # there (IDFRA, I<FRA).
    if n == 1 and 26 <= len(first) <= 34 and re.match(r"[ABD][0-9IL]FRA", first):
        return ["FRENCH_DRIVING_LICENSE"]
    if n == 2 and length >= 40:
        return ["MRVA", "TD3"] if first.startswith("V") else ["TD3", "MRVA"]
    if n == 2 and length >= 32:
        if first.startswith("IDFRA") or first.startswith("1DFRA"):
            return ["FRENCH_ID", "TD2"]
        return ["MRVB", "TD2"] if first.startswith("V") else ["TD2", "MRVB"]
    return []


def parse_mrz(raw_lines: list[str], formats: list[str] | None = None) -> MrzReading | None:
    """Best-checking reading of MRZ text lines, or None if they fit no supported format.

    Tries each plausible format, length repairs, positional corrections and check-digit-guided
    variants of the alphanumeric fields; keeps the variant with the most passing checks.
    """
    cleaned = [clean_line(l) for l in raw_lines if clean_line(l)]
    if not cleaned:
        return None
    best: MrzReading | None = None
    for fmt in formats or _formats_for(cleaned):
        layout = LAYOUTS[fmt]
        if len(cleaned) != len(layout.masks):
            continue
        per_line = [_length_variants(line, length) for line, length in zip(cleaned, layout.line_lengths)]
        for combo in itertools.islice(itertools.product(*per_line), 32):
            reading = _read_fixed(fmt, list(combo), cleaned)
            if reading and (best is None or reading.score() > best.score()):
                best = reading
            if best and best.valid:
                return best
    return best


def _read_fixed(fmt: str, lines: list[str], raw: list[str]) -> MrzReading | None:
    layout = LAYOUTS[fmt]
    notes: list[str] = []
    fixed = []
    for i, (line, mask) in enumerate(zip(lines, layout.masks)):
        line, n1 = _fix_fillers(line, mask)
        line, n2 = _fix_positions(line, mask)
        notes += [f"L{i + 1} {n}" for n in n1 + n2]
        fixed.append(line)
    alphabet_ok = all(_VALID.match(l) for l in fixed)
    if not alphabet_ok:
        # Characters outside the MRZ alphabet: parse what we can and report the zone invalid.
        fixed = [re.sub(r"[^A-Z0-9<]", "<", l) for l in fixed]
    result = _evaluate(fmt, fixed)
    if result is None:
        return None
    fields, checks = result
    # Check-digit-guided repair of ambiguous alphanumeric fields.
    for check_name, (line_no, span, digit_at) in _HASHED_FIELDS.get(fmt, {}).items():
        if checks.get(check_name, (True, ""))[0]:
            continue
        value = fixed[line_no][span]
        digit = fixed[line_no][digit_at]
        for variant, swaps in _alnum_variants(value):
            if swaps == 0:
                continue
            if not _VALID.match(variant) or not hash_is_ok(variant, digit if digit != "<" else "0"):
                continue
            candidate = list(fixed)
            candidate[line_no] = fixed[line_no][: span.start] + variant + fixed[line_no][span.stop :]
            retry = _evaluate(fmt, candidate)
            if retry and sum(ok for ok, _ in retry[1].values()) > sum(ok for ok, _ in checks.values()):
                fixed = candidate
                fields, checks = retry
                notes.append(f"L{line_no + 1} {value}->{variant} (check digit)")
                break
    if not alphabet_ok:
        checks["format_charset"] = (False, "characters outside the MRZ alphabet (A-Z, 0-9, <)")
    country = fields.get("issuing_country", "").replace("<", "")
    if country in SPECIMEN_STATES:
        checks["issuing_country_real"] = (False, f"{country} is the ICAO specimen state {SPECIMEN_STATES[country]}, not a real issuer")
    return MrzReading(format=fmt, lines=fixed, raw_lines=raw, fields=fields, checks=checks, corrections=notes)


# --- Locating the zone in OCR output ------------------------------------------------------------


def _merge_row_fragments(phrases: list[OcrLine]) -> list[OcrLine]:
    """Join phrases on the same visual row: the detector sometimes splits one MRZ line in two."""
    rows = group_rows(phrases, anchor="row", fits=lambda row, p: p.bbox.x0 >= row_box(row).x1 - 5)
    return [
        OcrLine(text="".join(p.text for p in row), bbox=row_box(row), confidence=min(p.confidence for p in row))
        for row in rows
    ]


def find_mrz(phrases: list[OcrLine], page: int | None = None) -> MrzReading | None:
    """The best MRZ among the OCR phrases of one page, or None."""
    candidates = [
        OcrLine(text=clean_line(p.text), bbox=p.bbox, confidence=p.confidence)
        for p in _merge_row_fragments(phrases)
    ]
    candidates = [c for c in candidates if looks_like_mrz(c.text)]
    if not candidates:
        return None
    candidates.sort(key=lambda c: c.bbox.y0)
    best: MrzReading | None = None
    # Consecutive runs of 2 or 3 lines of similar length, bottom-most groups first.
    for size in (3, 2):
        for start in range(len(candidates) - size, -1, -1):
            group = candidates[start : start + size]
            lengths = [len(c.text) for c in group]
            if max(lengths) - min(lengths) > 6:
                continue
            mean = sum(lengths) / size
            if size == 3 and not 26 <= mean <= 34:
                continue
            if size == 2 and not 32 <= mean <= 48:
                continue
            reading = parse_mrz([c.text for c in group])
            if reading is None or not reading.check_digits_ok:
                # Upside-down photos: PP-OCR's line classifier turns each line the right way
                # up, but the lines then come in reverse order.
                flipped = parse_mrz([c.text for c in reversed(group)])
                if flipped is not None and (reading is None or flipped.score() > reading.score()):
                    reading = flipped
            if reading is None:
                continue
            box = group[0].bbox
            for c in group[1:]:
                box = box.union(c.bbox)
            reading.bbox = box
            reading.page = page
            reading.confidence = sum(c.confidence for c in group) / size
            if best is None or reading.score() > best.score():
                best = reading
            if best.valid:
                return best
    return best


# --- Dates -------------------------------------------------------------------------------------


def resolve_date(yymmdd: str, kind: str, today: date | None = None) -> str | None:
    """YYMMDD -> ISO. Births are in the past; expiries at most ~20 years ahead of today."""
    if not _yymmdd_ok(yymmdd):
        return None
    today = today or date.today()
    yy, mm, dd = int(yymmdd[0:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    century = 2000
    if kind == "birth":
        if date(2000 + yy, mm, dd) > today:
            century = 1900
    elif kind == "expiry":
        if 2000 + yy > today.year + 20:
            century = 1900
    try:
        return date(century + yy, mm, dd).isoformat()
    except ValueError:  # 29 February in a non-leap century
        return None
