"""Safe opening of untrusted files: type by content (not extension), size, page and pixel caps.

Every loader and extractor opens files through here, so a bad input fails the same way
everywhere: an `IngestError` naming the file and the reason.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from docteller.settings import get_settings


class IngestError(Exception):
    """A file that cannot be ingested or extracted. `str()` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{Path(self.path).name}: {reason}")


IMAGE_MIMES = {"image/png", "image/jpeg", "image/tiff", "image/webp", "image/bmp", "image/gif"}
TEXT_MIMES = {"text/markdown", "text/plain", "text/html", "text/csv"}
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF = "application/pdf"

_EXT_TEXT = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
}


def sniff_bytes(head: bytes, name: str = "") -> str | None:
    """MIME type from magic bytes; text types fall back to the extension. None if unknown."""
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"  # refined by sniff() (DOCX / XLSX / plain zip)
    ext = Path(name).suffix.lower()
    if ext in _EXT_TEXT:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A cut multi-byte character at the end of the sample is fine; garbage is not.
            if exc.start < len(head) - 4:
                return None
        if b"\x00" in head:
            return None
        if ext in (".txt", ".text") and head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
            return "text/html"
        return _EXT_TEXT[ext]
    return None


def sniff(path: str | Path) -> str:
    """Content-based MIME type of a file, or `IngestError` if it is empty or unsupported."""
    path = Path(path)
    if not path.exists():
        raise IngestError(path, "file not found")
    if path.is_dir():
        raise IngestError(path, "is a directory")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(path, "empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    mime = sniff_bytes(head, path.name)
    if mime == "application/zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile as exc:
            raise IngestError(path, f"corrupt zip container ({exc})") from exc
        if "word/document.xml" in names:
            return DOCX
        if "xl/workbook.xml" in names:
            return XLSX
        return "application/zip"
    if mime is None:
        raise IngestError(path, f"unsupported file type ({path.suffix or 'no extension'}, content not recognised)")
    return mime


def open_pdf(path: str | Path, max_pages: int | None = None, data: bytes | None = None):
    """Open a PDF with PyMuPDF, refusing encrypted, corrupt, empty and oversized documents."""
    import pymupdf as fitz  # `import fitz` is deprecated in PyMuPDF 2

    max_pages = max_pages or get_settings().max_pages
    try:
        doc = fitz.open(stream=data, filetype="pdf") if data is not None else fitz.open(str(path), filetype="pdf")
    except Exception as exc:  # PyMuPDF raises its own FileDataError / RuntimeError variants
        raise IngestError(path, f"corrupt or truncated PDF ({exc})") from exc
    if doc.needs_pass or doc.is_encrypted:
        doc.close()
        raise IngestError(path, "encrypted or password-protected PDF")
    if doc.page_count == 0:
        doc.close()
        raise IngestError(path, "PDF has no pages (truncated or corrupt)")
    if doc.page_count > max_pages:
        n = doc.page_count
        doc.close()
        raise IngestError(path, f"too many pages ({n} > limit {max_pages}; DOCTELLER_MAX_PAGES)")
    return doc


def open_image(path: str | Path, max_pixels: int | None = None, data: bytes | None = None):
    """Open an image as RGB with a decompression-bomb cap and a full decode (catches truncation)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    max_pixels = max_pixels or get_settings().max_image_pixels
    src = io.BytesIO(data) if data is not None else str(path)
    try:
        with Image.open(src) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise IngestError(path, f"image too large ({w}x{h} = {w * h:,} pixels > cap {max_pixels:,}; possible decompression bomb)")
            img.load()  # forces a full decode: truncated files fail here
            img = ImageOps.exif_transpose(img)  # phone photos: honour the EXIF orientation
            return img.convert("RGB")
    except IngestError:
        raise
    except Image.DecompressionBombError as exc:
        raise IngestError(path, f"image too large (decompression bomb: {exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IngestError(path, f"corrupt or truncated image ({exc})") from exc
