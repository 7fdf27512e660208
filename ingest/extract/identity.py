"""ID cards, passports and visas: MRZ fields and checks, cross-checked with the printed zone."""

from __future__ import annotations

import logging
from datetime import date

from docteller.check_labels import CheckName, check_label, field_label
from docteller.model import Check, ExtractionResult, Field, Page, Redaction
from docteller.protocols import OcrResult
from docteller.redact import mask, masker_for
from ingest.extract.mrz import MrzReading, find_mrz, resolve_date
from ingest.pages import page_from_reading
from ingest.extract.visual import VisualField, compare, find_labelled_fields, not_read_reason, typed_value

log = logging.getLogger(__name__)

SENSITIVE = {"document_number", "personal_number", "optional_data", "optional_data_2"}
# Which check digit protects which field (names have no check digit of their own).
PROTECTED_BY = {
    "document_number": "check_digit_document_number",
    "date_of_birth": "check_digit_date_of_birth",
    "expiry_date": "check_digit_expiry_date",
    "personal_number": "check_digit_personal_number",
}
DOC_TYPES = {"P": "passport", "V": "visa", "I": "id", "A": "id", "C": "id"}
DRIVING_LICENCE_FORMATS = ("FRENCH_DRIVING_LICENSE", "SWISS_DRIVING_LICENSE")
CROSS_CHECKED = ("surname", "given_names", "document_number", "date_of_birth", "expiry_date", "sex")


def read_mrz_from_pages(pages: list[Page]) -> MrzReading | None:
    """The best MRZ over all pages; photos are retried at 180/90/270 degrees if none reads."""
    best: MrzReading | None = None
    for page in pages:
        reading = find_mrz(page.phrases, page=page.number)
        if reading and (best is None or reading.score() > best.score()):
            best = reading
        if best and best.check_digits_ok:
            return best
    return best


def mrz_check_digits_pass(result: OcrResult) -> bool:
    """Orientation acceptance for ID photos: an MRZ whose check digits all pass."""
    reading = find_mrz(result.lines)
    return reading is not None and reading.check_digits_ok


def mrz_hint(result: OcrResult) -> bool:
    """Filler runs that suggest an MRZ is there but was not read the right way up.

    '>>>' is how '<<<' reads upside down. '<<<' read correctly with no zone found around it
    (garbled, or split oddly by the detector) also earns other turns; a zone that reads but
    fails its check digits does not: its glyphs already face the right way, and another turn
    only re-reads the same characters (the deskewed second look is for that case).
    """
    if any(">>>" in ln.text for ln in result.lines):
        return True
    return any("<<<" in ln.text for ln in result.lines) and find_mrz(result.lines) is None


def mrz_quarter_turn(result: OcrResult) -> int | None:
    """For a photo lying on its side: the quarter turn that brings its MRZ to the bottom.

    The recogniser already reads lines standing on end, so the zone's filler runs ('<<', or
    '>>' when the crop came out upside down) show where it lies: on the right, a clockwise
    quarter turn (90) brings it down; on the left, 270."""
    from ingest.ocr import stands_on_end

    zone = [ln for ln in result.lines if ("<<" in ln.text or ">>" in ln.text) and len(ln.text) >= 20 and stands_on_end(ln)]
    if not zone or not result.width:
        return None
    centre = sum((ln.bbox.x0 + ln.bbox.x1) / 2 for ln in zone) / len(zone)
    return 90 if centre > result.width / 2 else 270


def retry_rotations(page: Page, engine_name: str = "rapidocr") -> tuple[MrzReading | None, Page | None]:
    """Read a photo again until an MRZ passes its check digits: deskewed at the turn the page
    was read at, then, where that reading found no zone with filler runs, at the other turns.

    Readings the orientation search already paid for come from the engine's cache.
    """
    if page.image is None:
        return None, None
    from ingest.ocr import deskew, get_ocr_engine, rotate_image

    engine = get_ocr_engine(engine_name)
    best, best_page = None, None
    turned = rotate_image(page.image, page.rotation)
    straight, angle = deskew(turned)
    attempts = [(page.rotation, straight)] if angle else []
    zone = find_mrz(page.phrases, page=page.number)
    if zone is None or not any("<<" in line for line in zone.raw_lines):
        attempts += [(degrees, rotate_image(page.image, degrees)) for degrees in (0, 180, 90, 270) if degrees != page.rotation]
    for degrees, image in attempts:
        result = engine.read(image)
        result.rotation = degrees
        content = page_from_reading(page.number, result)
        reading = find_mrz(content.phrases, page=page.number)
        if reading and (best is None or reading.score() > best.score()):
            best, best_page = reading, content
        if best and best.check_digits_ok:
            break
    return best, best_page


def mrz_result(result: ExtractionResult, reading: MrzReading, today: date | None = None) -> None:
    """Fill `result` with the MRZ's fields and checks."""
    today = today or date.today()
    f = reading.fields
    code = f.get("document_type", "").replace("<", "")
    result.doc_type = DOC_TYPES.get(code[:1], "id") if reading.format not in ("MRVA", "MRVB") else "visa"
    if reading.format == "FRENCH_ID" or reading.format in DRIVING_LICENCE_FORMATS:
        result.doc_type = "id"  # national formats: identity documents; `document_type` says which
    values = {
        "document_type": code,
        "issuing_country": f.get("issuing_country", "").replace("<", ""),
        "surname": f.get("surname", ""),
        "given_names": f.get("given_names", ""),
        "document_number": f.get("document_number", "").replace("<", ""),
        "nationality": f.get("nationality", "").replace("<", ""),
        "date_of_birth": resolve_date(f.get("date_of_birth", ""), "birth", today),
        # ICAO writes "<" for an unspecified sex (shown as X); driving licences carry no sex.
        "sex": f.get("sex", "").replace("<", "") or (None if reading.format in DRIVING_LICENCE_FORMATS else "X"),
        "expiry_date": resolve_date(f.get("expiry_date", ""), "expiry", today) if f.get("expiry_date") else None,
    }
    if f.get("personal_number", "").strip("<"):
        values["personal_number"] = f["personal_number"].strip("<")
    for key in ("optional_data", "optional_data_2"):
        if f.get(key, "").strip("<"):
            values[key] = f[key].strip("<")
    composite_ok = reading.checks.get("check_digit_composite", (False, ""))[0]
    for name, value in values.items():
        if value is None or value == "":
            continue
        guard = PROTECTED_BY.get(name)
        if guard and guard in reading.checks:
            ok = reading.checks[guard][0]
            confidence = 0.99 if ok else 0.5 * reading.confidence
        else:
            confidence = reading.confidence * (0.97 if composite_ok else 0.8)
        raw = f.get(name)
        result.fields[name] = Field(
            name=name,
            value=value,
            confidence=round(confidence, 4),
            page=reading.page,
            bbox=reading.bbox,
            raw=raw,
            source="mrz",
            sensitive=name in SENSITIVE,
        )
    result.fields["mrz_format"] = Field(name="mrz_format", value=reading.format, confidence=reading.confidence, page=reading.page, bbox=reading.bbox, source="mrz")
    for name, (ok, detail) in reading.checks.items():
        result.add_check(name, ok, detail)
    result.add_check(CheckName.mrz_valid, reading.valid, mrz_verdict_detail(reading))
    if reading.corrections:
        result.warnings.append(f"MRZ OCR repairs applied ({len(reading.corrections)}): accepted because the check digits pass" if reading.check_digits_ok else f"MRZ read with {len(reading.corrections)} repairs and failing check digits")
    add_validity_checks(result, today)
    log.info("mrz %s read: document %s, check digits %s", reading.format, mask(values["document_number"]), "ok" if reading.check_digits_ok else "FAILED")


def mrz_verdict_detail(reading: MrzReading) -> str:
    """Why the zone is (in)valid, naming the real reason: passing check digits do not make a
    zone valid when another check fails (the ICAO specimen state, a malformed country code)."""
    digits = {n: ok for n, (ok, _) in reading.checks.items() if n.startswith("check_digit")}
    others = [detail for n, (ok, detail) in reading.checks.items() if not ok and not n.startswith("check_digit")]
    bad_digits = [check_label(n) for n, ok in digits.items() if not ok]
    if not digits:
        head = "this zone carries no check digits"
    elif bad_digits:
        head = f"{len(bad_digits)} of {len(digits)} check digits do not agree ({', '.join(bad_digits)})"
    else:
        head = f"all {len(digits)} check digits agree"
    if reading.valid:
        return head + " and every field is well formed"
    if not others:
        return head
    return head + (", but " if not bad_digits else "; also ") + "; ".join(others)


def add_validity_checks(result: ExtractionResult, today: date) -> None:
    """expired (ok = still valid) and under_age (ok = holder is 18 or older)."""
    expiry = _iso_or_none(result.value("expiry_date"))
    if expiry:
        days = (date.fromisoformat(expiry) - today).days
        result.add_check(
            CheckName.expired,
            days >= 0,
            f"valid until {expiry} ({days} days left)" if days >= 0 else f"expired on {expiry} ({-days} days ago)",
        )
    birth = _iso_or_none(result.value("date_of_birth"))
    if birth:
        born = date.fromisoformat(birth)
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        result.add_check(CheckName.under_age, age >= 18, f"holder is {age}" + ("" if age >= 18 else " (under 18)"))


def _iso_or_none(value: str | None) -> str | None:
    try:
        return date.fromisoformat(value).isoformat() if value else None
    except ValueError:
        return None


def cross_check_visual(result: ExtractionResult, pages: list[Page]) -> None:
    """A Check per printed field found: does it agree with the MRZ?

    A printed text of the wrong type (a label, or another field's value, read where a date
    should be) is "not read", never a mismatch: it says nothing about the document."""
    printed: dict[str, tuple[VisualField, int]] = {}
    for page in pages:
        for name, vf in find_labelled_fields(page.phrases).items():
            printed.setdefault(name, (vf, page.number))
    for name, (vf, page_no) in printed.items():
        value = typed_value(name, vf.value)
        if value is not None:
            result.fields.setdefault(
                f"printed_{name}",
                Field(name=f"printed_{name}", value=value, confidence=round(vf.confidence * 0.9, 4), page=page_no, bbox=vf.bbox, raw=vf.raw, source="visual", sensitive=name in SENSITIVE),
            )
        mrz_field = result.fields.get(name)
        if name not in CROSS_CHECKED or mrz_field is None or mrz_field.value is None:
            continue
        if value is None:
            result.add_check(f"visual_{name}", None, _not_read(name, vf.value))
            continue
        # The text as printed is compared (a date like 11/01/94 can be read two ways); the
        # typed value is what the panel shows.
        _add(result, _visual_check(name, vf.value, mrz_field.value))


def _not_read(name: str, text: str) -> str:
    shown = mask(text) if name in SENSITIVE else text
    return f"printed {field_label(name)} not read: {shown!r} {not_read_reason(name)}"


def _visual_check(name: str, printed: str, mrz_value: str, corrected: bool = False) -> Check:
    """Printed vs MRZ; after a customer's correction, printed vs the corrected value."""
    agree = compare(name, printed, mrz_value)
    shown_mrz = mask(mrz_value) if name in SENSITIVE else mrz_value
    shown_printed = mask(printed) if name in SENSITIVE else printed
    other = "your correction" if corrected else "the MRZ"
    verdict = f"the printed zone agrees with {other}" if agree else f"the printed zone and {other} disagree"
    return Check(name=f"visual_{name}", ok=agree, detail=f"{verdict}: printed {shown_printed!r}, {other.removeprefix('the ')} {shown_mrz!r}")


def _add(result: ExtractionResult, check: Check) -> None:
    result.checks[check.name] = check


def recheck_identity(result: ExtractionResult, today: date | None = None) -> None:
    """Recompute the checks that depend on field values, after a customer corrects one: expiry,
    age, and printed-vs-MRZ agreement. Check digits belong to the zone as read and stay."""
    today = today or date.today()
    for name in (CheckName.expired, CheckName.under_age):
        result.checks.pop(name, None)
    add_validity_checks(result, today)
    for name in CROSS_CHECKED:
        printed, field = result.fields.get(f"printed_{name}"), result.fields.get(name)
        if printed is None or printed.value is None or field is None or not field.value:
            continue
        if f"visual_{name}" in result.checks or field.source == "user":
            _add(result, _visual_check(name, printed.value, field.value, corrected=field.source == "user"))


def labelled_id_result(result: ExtractionResult, pages: list[Page], today: date | None = None) -> bool:
    """IDs without an MRZ: label/value pairs from the printed zone. True if anything was found.

    A value of the wrong type for its label is left out (and named in a warning), not guessed."""
    today = today or date.today()
    found = False
    for page in pages:
        for name, vf in find_labelled_fields(page.phrases).items():
            if name in result.fields:
                continue
            value = typed_value(name, vf.value)
            if value is None:
                result.warnings.append(_not_read(name, vf.value))
                continue
            result.fields[name] = Field(name=name, value=value, confidence=round(vf.confidence * 0.85, 4), page=page.number, bbox=vf.bbox, raw=vf.raw, source="visual", sensitive=name in SENSITIVE)
            found = True
    if found:
        result.doc_type = "id"
        result.warnings.append("no MRZ found: fields read from printed labels only (no check digits to verify them)")
        add_validity_checks(result, today)
    return found


def id_orientation_hints():
    """How ID photos are turned upright: an MRZ whose check digits pass is proof."""
    from ingest.ocr import OrientationHints

    return OrientationHints(accept=mrz_check_digits_pass, worth_turning=mrz_hint, quarter_turn=mrz_quarter_turn)


def locate_sensitive_text(result: ExtractionResult, pages: list[Page]) -> None:
    """Record every OCR phrase that spells a document or personal number (by value, spaced or
    not: 'Z E 184226 B'), so previews can blank it wherever it is printed."""
    masker = masker_for([result])
    if not masker:
        return
    for page in pages:
        for phrase in page.phrases:
            if masker.contains(phrase.text):
                result.redactions.append(Redaction(page=page.number, bbox=phrase.bbox))
