"""Checked field extraction from uploads: IDs and passports, statements, receipts, forms.

    read_upload(path, *, data=None, name=None) -> Document       # read (and OCR) once
    extract_document(document, doc_type="auto") -> ExtractionResult
    extract(path, doc_type="auto", *, data=None, name=None) -> ExtractionResult   # both
    read_pages(path, *, data=None, name=None) -> list[Page]     # OCR'd text for chunking

An upload is read once (`ingest.loaders.convert` with `PageOptions.for_upload`): the same
`Document` is extracted from and indexed. `doc_type` is one of auto | id | passport |
statement | receipt | form. Bad files raise `ingest.sniff.IngestError`; a readable image that
is no document returns doc_type "unknown" with a warning "no fields found: <reason>".
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path

from docteller.model import Document, ExtractionResult, Page
from ingest.extract.mrz import MrzReading
from ingest.pages import PageOptions, Progress
from ingest.sniff import IMAGE_MIMES, PDF, IngestError

log = logging.getLogger(__name__)

DOC_TYPES = ("auto", "id", "passport", "statement", "receipt", "form")
# Extraction reads scans, photos and PDFs.
UPLOAD_MIMES = frozenset({PDF, *IMAGE_MIMES})

__all__ = ["extract", "extract_document", "extract_pages", "read_upload", "read_pages", "recheck", "DOC_TYPES", "IngestError"]


def upload_options(doc_type: str = "auto", *, engine: str = "rapidocr", preprocess: bool = False) -> PageOptions:
    """How an upload is read: `PageOptions.for_upload`, with ID photos turned upright until an
    MRZ passes its check digits when an ID may be among them."""
    from ingest.extract.identity import id_orientation_hints

    hints = id_orientation_hints() if doc_type in ("auto", "id", "passport") else None
    return PageOptions.for_upload(engine=engine, preprocess=preprocess, hints=hints)


def read_upload(
    path: str | Path,
    *,
    data: bytes | None = None,
    name: str | None = None,
    options: PageOptions | None = None,
    progress: Progress | None = None,
) -> Document:
    """Read a PDF or image upload once (OCR where needed), with the word geometry extraction
    needs. `progress(page, pages)` is called as each page starts being read (a status line for
    the customer)."""
    from ingest.loaders import convert, sniff_source

    started = time.perf_counter()
    label = name or str(path)
    mime = sniff_source(path, data, label)
    if mime not in UPLOAD_MIMES:
        raise IngestError(label, f"not a PDF or image ({mime}); extraction reads scans, photos and PDFs")
    document = convert(path, options or upload_options(), data=data, name=name, origin="upload",
                       progress=progress, require_text=False, mimes=UPLOAD_MIMES)
    document.metadata["read_seconds"] = round(time.perf_counter() - started, 3)
    return document


def read_pages(path: str | Path, *, data: bytes | None = None, name: str | None = None) -> list[Page]:
    """The upload's text as `docteller.model.Page`s (OCR'd where needed), for chunking."""
    return read_upload(path, data=data, name=name).pages


def extract(
    path: str | Path,
    doc_type: str = "auto",
    *,
    data: bytes | None = None,
    name: str | None = None,
    today: date | None = None,
    engine: str = "rapidocr",
    preprocess: bool = False,
    progress: Progress | None = None,
) -> ExtractionResult:
    """Read one upload and extract and check its fields (see module docstring).

    `engine` picks the OCR engine for scans and photos (rapidocr | tesseract); `preprocess`
    applies grayscale + autocontrast before OCR (measured in benchmarks/bench_extraction.py).
    """
    if doc_type not in DOC_TYPES:
        raise ValueError(f"doc_type must be one of {', '.join(DOC_TYPES)}, not {doc_type!r}")
    options = upload_options(doc_type, engine=engine, preprocess=preprocess)
    document = read_upload(path, data=data, name=name, options=options, progress=progress)
    return extract_document(document, doc_type, today=today)


def extract_document(document: Document, doc_type: str = "auto", *, today: date | None = None) -> ExtractionResult:
    """Extract and check the fields of an upload already read by `read_upload`.

    The page images kept for second looks (an MRZ at other turns, a receipt's header) are
    dropped afterwards: the document may live on in a session's index."""
    if doc_type not in DOC_TYPES:
        raise ValueError(f"doc_type must be one of {', '.join(DOC_TYPES)}, not {doc_type!r}")
    started = time.perf_counter()
    result = ExtractionResult(source=document.source, doc_id=document.id, pages=len(document.pages))
    try:
        extract_pages(result, document.pages, doc_type, today=today)
    finally:
        for page in document.pages:
            page.image = None
    read_seconds = float(document.metadata.get("read_seconds", 0.0))
    result.seconds = round(read_seconds + time.perf_counter() - started, 3)
    return result


def extract_pages(result: ExtractionResult, pages: list[Page], doc_type: str = "auto", *, today: date | None = None) -> None:
    """Dispatch on the requested or detected type; fills `result` in place."""
    from ingest.extract import identity
    from ingest.extract.detect import guess_doc_type

    if not any(p.words for p in pages):
        result.doc_type = "unknown"
        result.warnings.append("no fields found: no text could be read (blank, too blurred, or not a document)")
        return
    if doc_type in ("auto", "id", "passport"):
        reading = identity.read_mrz_from_pages(pages)
        # A zone that fails its checks (or, when an ID was asked for, no zone at all) earns a
        # second look: deskewed and turned.
        failing_zone = reading is not None and not reading.check_digits_ok and any("<<" in line for line in reading.raw_lines)
        if failing_zone or (reading is None and doc_type != "auto"):
            for page in pages:
                retry, turned = identity.retry_rotations(page)
                if retry and (reading is None or retry.score() > reading.score()):
                    reading = retry
                    pages = [turned if p.number == page.number else p for p in pages]
                if reading and reading.check_digits_ok:
                    break
        if reading is not None and (doc_type != "auto" or _plausible_mrz(reading)):
            identity.mrz_result(result, reading, today)
            identity.cross_check_visual(result, pages)
            identity.locate_sensitive_text(result, pages)
            return
        if doc_type in ("id", "passport"):
            if not identity.labelled_id_result(result, pages, today):
                result.warnings.append("no fields found: no MRZ and no labelled ID fields in the text")
            identity.locate_sensitive_text(result, pages)
            return
    kind = doc_type if doc_type != "auto" else guess_doc_type(pages)
    if kind == "statement":
        from ingest.extract.statement import extract_statement

        if not extract_statement(result, pages):
            result.warnings.append("no fields found: no statement header fields or transactions table")
        return
    if kind == "receipt":
        from ingest.extract.receipt import extract_receipt

        extract_receipt(result, pages)
        return
    if kind == "form":
        from ingest.extract.forms import extract_form

        extract_form(result, pages)
        return
    if kind == "id" and identity.labelled_id_result(result, pages, today):
        return
    result.doc_type = "unknown"
    result.warnings.append("no fields found: the text matches no supported document (ID/passport MRZ, statement, receipt, form)")


def recheck(result: ExtractionResult, *, today: date | None = None) -> None:
    """Recompute the checks that depend on field values, in place: after a customer corrects a
    field, the Checks panel, the CLI and the chat must all judge the corrected values."""
    if result.doc_type == "statement":
        from ingest.extract.statement import reconcile_checks

        reconcile_checks(result)
    elif result.doc_type in ("passport", "id", "visa"):
        from ingest.extract.identity import recheck_identity

        recheck_identity(result, today)


def _plausible_mrz(reading: MrzReading) -> bool:
    """In auto mode, a long digit-heavy line is not an MRZ unless its check digits mostly agree
    (random text passes each check digit with probability ~1/10)."""
    digits = [ok for name, (ok, _) in reading.checks.items() if name.startswith("check_digit")]
    return sum(digits) >= max(2, len(digits) - 1) and any("<" in line for line in reading.raw_lines)
