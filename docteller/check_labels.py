"""Plain names for checks and fields, as a customer reads them.

Check keys (`check_digit_composite`, `format_sex`, ...) are machine names: stable in JSON and in
code. What people see (the Checks panel, `docteller extract`, chat messages) is the label here,
never the MRZ library's own wording ("final hash", "valid genre format").
"""

from __future__ import annotations

from enum import Enum


class CheckName(str, Enum):
    """Every check extraction produces: the stable machine keys of `ExtractionResult.checks`."""

    def __str__(self) -> str:  # the key itself in f-strings, logs and JSON, as a plain str would be
        return self.value

    mrz_valid = "mrz_valid"
    check_digit_document_number = "check_digit_document_number"
    check_digit_date_of_birth = "check_digit_date_of_birth"
    check_digit_expiry_date = "check_digit_expiry_date"
    check_digit_personal_number = "check_digit_personal_number"
    check_digit_composite = "check_digit_composite"
    format_document_type = "format_document_type"
    format_issuing_country = "format_issuing_country"
    format_nationality = "format_nationality"
    format_date_of_birth = "format_date_of_birth"
    format_expiry_date = "format_expiry_date"
    format_sex = "format_sex"
    format_name = "format_name"
    format_document_number = "format_document_number"
    format_optional_data = "format_optional_data"
    format_optional_data_2 = "format_optional_data_2"
    format_charset = "format_charset"
    format_language_code = "format_language_code"
    format_pin_code = "format_pin_code"
    format_version_number = "format_version_number"
    format_fillers = "format_fillers"
    issuing_country_real = "issuing_country_real"
    expired = "expired"
    under_age = "under_age"
    # The printed (visual) zone against the MRZ, one per cross-checked field.
    visual_surname = "visual_surname"
    visual_given_names = "visual_given_names"
    visual_document_number = "visual_document_number"
    visual_date_of_birth = "visual_date_of_birth"
    visual_expiry_date = "visual_expiry_date"
    visual_sex = "visual_sex"
    # Statements.
    running_balance = "running_balance"
    balance_reconciles = "balance_reconciles"

# The field each MRZ check digit protects, in words.
DIGIT_SUBJECTS = {
    "check_digit_document_number": "document number",
    "check_digit_date_of_birth": "date of birth",
    "check_digit_expiry_date": "expiry date",
    "check_digit_personal_number": "personal number",
    "check_digit_composite": "whole data line",
}

CHECK_LABELS = {
    "mrz_valid": "Machine-readable zone (MRZ)",
    "check_digit_document_number": "Document number check digit",
    "check_digit_date_of_birth": "Date of birth check digit",
    "check_digit_expiry_date": "Expiry date check digit",
    "check_digit_personal_number": "Personal number check digit",
    "check_digit_composite": "Overall check digit",
    "format_document_type": "Document type code",
    "format_issuing_country": "Issuing country code",
    "format_nationality": "Nationality code",
    "format_date_of_birth": "Date of birth format",
    "format_expiry_date": "Expiry date format",
    "format_sex": "Sex field format",
    "format_name": "Name format",
    "format_document_number": "Document number format",
    "format_optional_data": "Optional data format",
    "format_optional_data_2": "Second optional data format",
    "format_charset": "MRZ characters",
    "format_language_code": "Language code",
    "format_pin_code": "PIN code format",
    "format_version_number": "Version number format",
    "format_fillers": "Separator positions",
    "issuing_country_real": "Real issuing country",
    "expired": "Not expired",
    "under_age": "Holder is 18 or over",
    "running_balance": "Running balance",
    "balance_reconciles": "Totals reconcile",
}

FIELD_LABELS = {
    "date_of_birth": "date of birth",
    "expiry_date": "expiry date",
    "date_of_issue": "date of issue",
    "document_number": "document number",
    "given_names": "given names",
    "opening_balance": "opening balance",
    "closing_balance": "closing balance",
}

DOC_TYPE_NAMES = {
    "passport": "passport",
    "id": "ID document",
    "visa": "visa",
    "statement": "bank statement",
    "receipt": "receipt",
    "form": "form",
    "unknown": "document of unknown type",
}


def field_label(name: str) -> str:
    """'printed_expiry_date' -> 'printed expiry date'."""
    return FIELD_LABELS.get(name, name.replace("_", " "))


def check_label(name: str) -> str:
    """The plain name of a check; unknown keys read as words rather than snake_case."""
    name = str(name)
    if name in CHECK_LABELS:
        return CHECK_LABELS[name]
    if name.startswith("visual_"):
        return f"Printed {field_label(name.removeprefix('visual_'))} vs MRZ"
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def with_article(noun: str) -> str:
    """'a passport', 'an ID document': the article by sound of the first letter (ID is 'eye-dee')."""
    first = noun[:1].lower()
    vowel_sound = first in "aeio" or noun[:2].isupper() and first in "fhilmnrsx"
    return f"{'an' if vowel_sound else 'a'} {noun}"


def doc_type_name(doc_type: str) -> str:
    return DOC_TYPE_NAMES.get(doc_type, doc_type)


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 page', '3 pages'."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
