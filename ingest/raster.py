"""Page images: the one place a PDF page becomes pixels, at the resolution the caller names.

OCR reads scanned pages at `PageOptions.ocr_dpi`, the vision model sees the first pages of an
upload, and the UI shows cited pages with highlights: all of them come through `rasterise`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def rasterise(page: Any, dpi: float, *, clip: Any = None, gray: bool = False) -> Image.Image:
    """A PyMuPDF page (optionally the `clip` rectangle of it, in PDF points) as an RGB (or
    grayscale) image at `dpi` pixels per inch; 72 dpi is one pixel per PDF point."""
    import pymupdf

    zoom = dpi / 72.0
    pix = page.get_pixmap(
        matrix=pymupdf.Matrix(zoom, zoom),
        clip=clip,
        colorspace=pymupdf.csGRAY if gray else pymupdf.csRGB,
        alpha=False,
    )
    return Image.frombytes("L" if gray else "RGB", (pix.width, pix.height), pix.samples)


def page_pixels(page: Any, dpi: float) -> np.ndarray:
    """A PDF page as an RGB uint8 array (H, W, 3), as OCR engines read it."""
    return np.array(rasterise(page, dpi))  # a writable copy: engines may work in place
