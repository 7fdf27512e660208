"""Printed (visual inspection) zone of IDs and passports: labelled fields in the OCR lines.

Labels are multilingual as printed on ICAO documents ("Surname/ Nom", "Date of birth/ Date de
naissance"). A value is the text after the label on the same line ("Nom: BERTHIER") or the
nearest line below, left-aligned with the label (the passport data-page layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docteller.model import BBox
from docteller.parsing.dates import parse_printed_date, printed_date_readings
from docteller.parsing.text import fold
from docteller.protocols import OcrLine

# field -> label spellings (lowercase, accents stripped), most specific first.
LABELS: dict[str, tuple[str, ...]] = {
    "surname": ("surname", "nom de famille", "apellidos", "nachname", "cognome", "achternaam", "nom"),
    "given_names": ("given names", "given name", "prenoms", "prenom", "first name", "vornamen", "nombres", "voornamen"),
    "date_of_birth": ("date of birth", "date de naissance", "ne(e) le", "nee le", "ne le", "geburtsdatum", "fecha de nacimiento", "birth date", "dob"),
    "document_number": ("passport no", "passport number", "no de passeport", "document no", "document number", "card no", "card number", "id no", "carte nationale d'identite no", "ausweisnummer"),
    "expiry_date": ("date of expiry", "expiry date", "date d'expiration", "valid until", "gultig bis", "expires", "expiry"),
    "nationality": ("nationality", "nationalite", "staatsangehorigkeit", "nacionalidad"),
    "sex": ("sex", "sexe", "geschlecht", "sexo"),
    "place_of_birth": ("place of birth", "lieu de naissance", "geburtsort"),
    "date_of_issue": ("date of issue", "date de delivrance", "ausstellungsdatum"),
}

@dataclass
class VisualField:
    name: str
    value: str
    raw: str
    confidence: float
    bbox: BBox


def _label_at(folded: str) -> tuple[str, int, int] | None:
    """(field, start, end) of the earliest label in a folded line, preferring longer labels."""
    best = None
    for name, spellings in LABELS.items():
        for spelling in spellings:
            for m in re.finditer(r"(?<![a-z])" + re.escape(spelling) + r"(?![a-z])", folded):
                key = (m.start(), -(m.end() - m.start()))
                if best is None or key < best[0]:
                    best = (key, name, m.start(), m.end())
                break
    return (best[1], best[2], best[3]) if best else None


def _is_label_line(folded: str) -> bool:
    return _label_at(folded) is not None


def find_labelled_fields(phrases: list[OcrLine]) -> dict[str, VisualField]:
    """Labelled values in a page's OCR lines; the first occurrence of each field wins.

    A candidate of the wrong type (a date field whose text is no date, a name with digits) is
    passed over for one of the right type nearby; if none is found, the nearest text is kept as
    read, and `typed_value` later reports it as not read rather than as a disagreement."""
    found: dict[str, VisualField] = {}
    for i, line in enumerate(phrases):
        folded = fold(line.text)
        hit = _label_at(folded)
        if not hit:
            continue
        name, start, end = hit
        if name in found or _on_its_side(line):
            continue
        # Bilingual labels ("Surname/ Nom"): skip the translation, then an optional colon.
        rest = line.text[end:]
        rest = re.sub(r"^\s*/\s*[^:]*?(?=:|$)", "", rest) if "/" in rest[:3] else rest
        rest = re.sub(r"^\s*\((?:s|e|es)\)", "", rest)  # "Prénom(s):", "Né(e) le"
        rest = re.sub(r"^\s*[:.]?\s*", "", rest).strip()
        same_line = VisualField(name, rest, line.text, line.confidence, line.bbox) if rest and not _is_label_line(fold(rest)) else None
        if same_line is not None and typed_value(name, rest) is not None:
            found[name] = same_line
            continue
        # Where the label starts inside its phrase (one OCR box may hold two labels).
        label_x = line.bbox.x0 + line.bbox.width * start / max(len(folded), 1)
        below = _value_below(phrases, i, label_x, name)
        if below is not None and (same_line is None or typed_value(name, below.text) is not None):
            found[name] = VisualField(name, below.text.strip(), below.text, below.confidence, below.bbox)
        elif same_line is not None:
            found[name] = same_line
    return found


def _on_its_side(line: OcrLine) -> bool:
    """A label read standing on end (the facing page of a passport photographed open): "below"
    it means nothing in the data page's layout, and its box is a column, not a line height."""
    return len(line.text.strip()) >= 3 and line.bbox.height > 1.5 * line.bbox.width


def _value_below(phrases: list[OcrLine], index: int, label_x: float, name: str) -> OcrLine | None:
    """The nearest line under the label, preferring one whose text has the field's type."""
    label = phrases[index]
    height = max(label.bbox.height, 1.0)
    candidates: list[tuple[bool, float, int]] = []
    for j, other in enumerate(phrases):
        if other is label:
            continue
        dy = other.bbox.y0 - label.bbox.y0
        if not (0.3 * height < dy < 2.6 * height):
            continue
        dx = abs(other.bbox.x0 - label_x)
        if dx > 3 * height:
            continue
        if _is_label_line(fold(other.text)):
            continue
        candidates.append((typed_value(name, other.text) is None, dy + dx, j))
    return phrases[min(candidates)[2]] if candidates else None


DATE_FIELDS = ("date_of_birth", "expiry_date", "date_of_issue")
NAME_FIELDS = ("surname", "given_names")
_SEX_WORDS = {"M": "M", "F": "F", "X": "X", "MALE": "M", "FEMALE": "F"}


def typed_value(name: str, text: str) -> str | None:
    """The printed value normalised to its field's type, or None when the text is not of that
    type: a date field that does not parse as a date, a sex that is not M/F/X, a document number
    without digits (or that is a date), a name with digits. None means "not read"."""
    text = (text or "").strip()
    if not text:
        return None
    if name in DATE_FIELDS:
        return parse_printed_date(text)
    if name == "sex":
        # Bilingual prints ("KVK/F", "F/F"): the first token that is an ICAO letter or word;
        # a national code alone ("K" for kobieta) is not read rather than guessed.
        tokens = re.split(r"[\s/]+", fold(text).upper().strip(" .:"))
        return next((_SEX_WORDS[t] for t in tokens if t in _SEX_WORDS), None)
    if name == "document_number":
        compact = re.sub(r"\s+", "", text.upper())
        if re.fullmatch(r"[A-Z0-9<]{5,20}", compact) and re.search(r"\d", compact) and parse_printed_date(text) is None:
            return compact.strip("<")
        return None
    if name in NAME_FIELDS or name == "nationality":
        letters = fold(text)
        if re.search(r"\d", letters) or not re.search(r"[a-z]", letters) or len(text) > 60:
            return None
        return text
    return text


NOT_READ_REASONS = {"sex": "is not M, F or X", "document_number": "is not a document number", "nationality": "is not a nationality"}


def not_read_reason(name: str) -> str:
    """Why a printed text was not taken as the field's value, for the check's detail."""
    if name in DATE_FIELDS:
        return "is not a date"
    if name in NAME_FIELDS:
        return "is not a name"
    return NOT_READ_REASONS.get(name, "is not a value of this field")


def normalise_name(text: str) -> str:
    t = fold(text).upper()
    return " ".join(re.sub(r"[^A-Z ]", " ", t).split())


def compare(field: str, printed: str, mrz_value: str) -> bool:
    """Does the printed value agree with the MRZ one? Names compare after transliteration-insensitive folding."""
    if not printed or not mrz_value:
        return False
    if field in DATE_FIELDS:
        # Printed years are often two digits: compare month/day exactly and the year modulo 100.
        return any(iso[5:] == mrz_value[5:] and iso[2:4] == mrz_value[2:4] for iso in printed_date_readings(printed))
    if field == "document_number":
        return re.sub(r"[^A-Z0-9]", "", printed.upper()) == re.sub(r"[^A-Z0-9]", "", mrz_value.upper())
    if field == "sex":
        return typed_value("sex", printed) == mrz_value[:1]
    if field == "surname" and "," in printed:
        printed = printed.split(",")[0]  # "LIN, MEI-HUA": the full name printed surname first
    a, b = normalise_name(printed), normalise_name(mrz_value)
    # MRZ names are truncated to the zone width and transliterate (Ä -> AE): accept a prefix.
    return a == b or (len(b) >= 4 and a.startswith(b)) or (len(a) >= 4 and b.startswith(a))
