"""OCR engines behind the `OcrEngine` protocol.

RapidOCR is the default: PP-OCR ONNX models ship inside its wheel, so nothing is downloaded.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

import numpy as np

from docteller.model import BBox
from docteller.protocols import OcrEngine, OcrLine, OcrResult

log = logging.getLogger(__name__)


class RapidOcrEngine:
    """PP-OCR (detection + recognition) via rapidocr/onnxruntime."""

    name = "rapidocr"

    def __init__(self) -> None:
        # rapidocr logs every model path at INFO; keep our logs readable.
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        from rapidocr import RapidOCR

        self._engine = RapidOCR()
        # The ONNX sessions are not documented as re-entrant; one read at a time per engine.
        self._lock = threading.Lock()

    def read(self, image: np.ndarray) -> OcrResult:
        h, w = image.shape[:2]
        with self._lock:
            out = self._engine(image)
        lines: list[OcrLine] = []
        if out.boxes is not None and out.txts:
            for box, text, score in zip(out.boxes, out.txts, out.scores):
                text = str(text).strip()
                if text:
                    lines.append(OcrLine(text=text, bbox=BBox.from_points(box.tolist()), confidence=float(score)))
        return OcrResult(lines=sort_reading_order(lines), width=w, height=h, engine=self.name)


def sort_reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top-to-bottom, then left-to-right within a visual row (lines whose centres share a band)."""
    if not lines:
        return lines
    by_top = sorted(lines, key=lambda ln: (ln.bbox.y0 + ln.bbox.y1) / 2)
    rows: list[list[OcrLine]] = []
    for line in by_top:
        centre = (line.bbox.y0 + line.bbox.y1) / 2
        if rows:
            last = rows[-1]
            ref = last[0]
            ref_centre = (ref.bbox.y0 + ref.bbox.y1) / 2
            if abs(centre - ref_centre) < 0.5 * max(min(ref.bbox.height, line.bbox.height), 1.0):
                last.append(line)
                continue
        rows.append([line])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.bbox.x0)]


@lru_cache(maxsize=4)
def get_ocr_engine(name: str = "rapidocr") -> OcrEngine:
    """Shared engine instances: model loading costs ~2 s, reading is what should be paid per page."""
    if name == "rapidocr":
        return RapidOcrEngine()
    raise ValueError(f"unknown OCR engine {name!r} (available: rapidocr)")
