"""OCR engines behind the `OcrEngine` protocol.

RapidOCR is the default: PP-OCR ONNX models ship inside its wheel, so nothing is downloaded.
Tesseract (when installed) is an optional second opinion. Helpers here handle what phone photos
need before reading: orientation (90/180/270 turns), small deskew, grayscale/contrast, size caps.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from docteller.model import BBox
from docteller.protocols import OcrEngine, OcrLine, OcrResult

log = logging.getLogger(__name__)


class RapidOcrEngine:
    """PP-OCR (detection + recognition) via rapidocr/onnxruntime."""

    name = "rapidocr"

    def __init__(self) -> None:
        from rapidocr import RapidOCR

        # rapidocr logs every model path at INFO and resets its logger's level from its config
        # on construction: ask the config for warnings only.
        self._engine = RapidOCR(params={"Global.log_level": "warning"})
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


# --- Tesseract: an optional second opinion ------------------------------------------------------


class TesseractEngine:
    """Tesseract 5 via pytesseract's TSV output, words grouped into lines.

    Slower and weaker than PP-OCR on photos, but an independent reader: where RapidOCR's MRZ
    fails its check digits, Tesseract's reading sometimes passes them.
    """

    name = "tesseract"

    def __init__(self, lang: str = "eng", psm: int = 6) -> None:
        import pytesseract

        try:
            pytesseract.get_tesseract_version()
        except pytesseract.TesseractNotFoundError as exc:
            raise RuntimeError("tesseract is not installed (apt-get install tesseract-ocr)") from exc
        self._tess = pytesseract
        self.lang = lang
        self.psm = psm

    def read(self, image: np.ndarray) -> OcrResult:
        h, w = image.shape[:2]
        data = self._tess.image_to_data(
            image, lang=self.lang, config=f"--psm {self.psm}", output_type=self._tess.Output.DICT
        )
        grouped: dict[tuple[int, int, int], list[int]] = {}
        for i, text in enumerate(data["text"]):
            if str(text).strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                grouped.setdefault(key, []).append(i)
        lines: list[OcrLine] = []
        for idx in grouped.values():
            x0 = min(data["left"][i] for i in idx)
            y0 = min(data["top"][i] for i in idx)
            x1 = max(data["left"][i] + data["width"][i] for i in idx)
            y1 = max(data["top"][i] + data["height"][i] for i in idx)
            text = " ".join(str(data["text"][i]).strip() for i in idx)
            conf = sum(float(data["conf"][i]) for i in idx) / len(idx) / 100.0
            lines.append(OcrLine(text=text, bbox=BBox(x0=x0, y0=y0, x1=x1, y1=y1), confidence=conf))
        return OcrResult(lines=sort_reading_order(lines), width=w, height=h, engine=self.name)


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


# --- Preprocessing and orientation -------------------------------------------------------------


def to_grayscale_contrast(image: np.ndarray) -> np.ndarray:
    """Grayscale + autocontrast (1% clip), returned as 3-channel RGB for the engines.

    Helps on dim, low-contrast phone photos; on clean scans it changes little (see
    benchmarks/bench_extraction.py --preprocess for the measured effect).
    """
    from PIL import Image, ImageOps

    gray = ImageOps.autocontrast(Image.fromarray(image).convert("L"), cutoff=1)
    return np.asarray(gray.convert("RGB"))


def limit_size(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most `max_side`; returns (image, scale applied)."""
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image, 1.0
    from PIL import Image

    scale = max_side / longest
    small = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return np.asarray(small), scale


def rotate_image(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate clockwise by a multiple of 90 degrees."""
    turns = (degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=-turns)) if turns else image


def _reading_score(result: OcrResult) -> float:
    """How plausible a reading is: confident characters on horizontal lines."""
    score = 0.0
    for line in result.lines:
        # Upside-down glyphs come back as look-alike symbols (∀, ⊥, '>' for '<'): count only
        # ASCII letters, digits and the MRZ filler.
        chars = sum(c.isascii() and (c.isalnum() or c == "<") for c in line.text)
        wide = line.bbox.width >= line.bbox.height or chars <= 2
        score += line.confidence * chars * (1.0 if wide else 0.2)
    return score


def looks_misoriented(result: OcrResult) -> bool:
    """Most multi-character lines are taller than wide (text runs vertically), or nothing reads well."""
    multi = [ln for ln in result.lines if len(ln.text) >= 4]
    if not multi:
        return True
    tall = sum(ln.bbox.height > 1.5 * ln.bbox.width for ln in multi)
    return tall > len(multi) / 2 or result.mean_confidence < 0.5


def deskew(image: np.ndarray, max_angle: float = 8.0, step: float = 0.5) -> tuple[np.ndarray, float]:
    """Correct a small skew (|angle| <= max_angle) by maximising the row-profile variance.

    Text rows give a sharply peaked horizontal projection when level; a tilted page smears it.
    Works on a downscaled binarised copy so it costs ~50 ms.
    """
    from PIL import Image

    gray = Image.fromarray(image).convert("L")
    small = gray.copy()
    small.thumbnail((600, 600))
    arr = np.asarray(small, dtype=np.float32)
    ink = (arr < arr.mean() - arr.std() * 0.5).astype(np.uint8) * 255
    ink_img = Image.fromarray(ink)
    best_angle, best_score = 0.0, -1.0
    for angle in np.arange(-max_angle, max_angle + 1e-6, step):
        rotated = np.asarray(ink_img.rotate(float(angle), resample=Image.NEAREST, expand=False), dtype=np.float32)
        profile = rotated.sum(axis=1)
        score = float(np.var(profile))
        if score > best_score:
            best_score, best_angle = score, float(angle)
    if abs(best_angle) < step:
        return image, 0.0
    fill = tuple(int(v) for v in np.median(image.reshape(-1, image.shape[-1]), axis=0))
    straight = Image.fromarray(image).rotate(best_angle, resample=Image.BICUBIC, expand=True, fillcolor=fill)
    return np.asarray(straight), best_angle


def read_oriented(
    engine: OcrEngine,
    image: np.ndarray,
    *,
    try_rotations: bool = True,
    accept: Callable[[OcrResult], bool] | None = None,
    worth_turning: Callable[[OcrResult], bool] | None = None,
) -> OcrResult:
    """Read an image, trying 90/180/270 degree turns when the upright reading looks wrong.

    A reading is accepted when its lines are horizontal and confident, or when `accept` (a
    domain signal, e.g. an MRZ whose check digits pass) says so; `accept` also stops the search
    at the first turn it approves. `worth_turning` flags an upright-looking reading that still
    deserves other turns (an MRZ-like line that fails its checks). The best-scoring
    reading wins; `OcrResult.rotation` records the turn applied.
    """
    first = engine.read(image)
    if not try_rotations or (accept is not None and accept(first)):
        return first
    if not looks_misoriented(first) and not (worth_turning is not None and worth_turning(first)):
        return first
    if not first.lines:
        return first  # the detector found no text at all: turning the image will not create any
    best, best_score = first, _reading_score(first)
    tall = sum(ln.bbox.height > 1.5 * ln.bbox.width for ln in first.lines if len(ln.text) >= 4)
    order = (90, 270, 180) if tall > len(first.lines) / 3 else (180, 90, 270)
    for degrees in order:
        result = engine.read(rotate_image(image, degrees))
        result.rotation = degrees
        if accept and accept(result):
            return result
        score = _reading_score(result)
        margin = 1.15 if best is first else 1.0  # a turn must clearly beat the upright reading
        if score > best_score * margin:
            best, best_score = result, score
    log.debug("orientation: chose %d degrees (score %.1f)", best.rotation, best_score)
    return best


@lru_cache(maxsize=4)
def get_ocr_engine(name: str = "rapidocr") -> OcrEngine:
    """Shared engine instances: model loading costs ~2 s, reading is what should be paid per page."""
    if name == "rapidocr":
        return RapidOcrEngine()
    if name == "tesseract":
        return TesseractEngine()
    raise ValueError(f"unknown OCR engine {name!r} (available: rapidocr, tesseract)")
