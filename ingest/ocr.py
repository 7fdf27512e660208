"""OCR engines behind the `OcrEngine` protocol.

RapidOCR is the default: PP-OCR ONNX models ship inside its wheel, so nothing is downloaded.
Tesseract (when installed) is an optional second opinion. Helpers here handle what phone photos
need before reading: orientation (90/180/270 turns), small deskew, grayscale/contrast, size caps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from docteller.model import BBox
from docteller.parsing.rows import group_rows
from docteller.protocols import OcrEngine, OcrLine, OcrResult

log = logging.getLogger(__name__)


def image_key(image: np.ndarray) -> str:
    """Content digest of a pixel array (shape included): equal images share a key."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8).data, digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    return digest.hexdigest()


class ReadingCache:
    """The last few readings by image content, so a second look at the same pixels is free.

    The orientation search and the ID retry both read the same turned photo; without this a
    failing ID paid for each turn twice. Readings are small (text and boxes), images are not
    kept. Hits return a copy: callers set `rotation` on what they get.
    """

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._items: OrderedDict[str, OcrResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> OcrResult | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
        return _copy_result(hit)

    def put(self, key: str, result: OcrResult) -> None:
        with self._lock:
            self._items[key] = _copy_result(result)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _copy_result(result: OcrResult) -> OcrResult:
    return dataclasses.replace(result, lines=list(result.lines), extras=dict(result.extras))


DETECTION_SHORT_SIDE = 512


class RapidOcrEngine:
    """PP-OCR (detection + recognition) via rapidocr/onnxruntime."""

    name = "rapidocr"

    def __init__(self) -> None:
        from rapidocr import RapidOCR

        # rapidocr logs every model path at INFO and resets its logger's level from its config
        # on construction: ask the config for warnings only. Detection upscales an image until
        # its short side reaches `limit_side_len`; 512 instead of the default 736 reads ID photos
        # 12 % faster and receipts 14 % faster with the same MRZ, SROIE and FUNSD accuracy
        # (measured with benchmarks/bench_extraction.py; scanned pages at 120 dpi exceed both).
        self._engine = RapidOCR(params={"Global.log_level": "warning", "Det.limit_side_len": DETECTION_SHORT_SIDE})
        # The ONNX sessions are not documented as re-entrant; one read at a time per engine.
        self._lock = threading.Lock()
        self._cache = ReadingCache()

    def read(self, image: np.ndarray) -> OcrResult:
        key = image_key(image)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        h, w = image.shape[:2]
        with self._lock:
            out = self._engine(image)
        lines: list[OcrLine] = []
        if out.boxes is not None and out.txts:
            for box, text, score in zip(out.boxes, out.txts, out.scores):
                text = str(text).strip()
                if text:
                    lines.append(OcrLine(text=text, bbox=BBox.from_points(box.tolist()), confidence=float(score)))
        result = OcrResult(lines=sort_reading_order(lines), width=w, height=h, engine=self.name)
        self._cache.put(key, result)
        return result


def sort_reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top-to-bottom, then left-to-right within a visual row (lines whose centres share a band)."""
    return [ln for row in group_rows(lines) for ln in row]


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


def stands_on_end(line: OcrLine) -> bool:
    """A text box much taller than wide: its text runs vertically (a photo lying on its side)."""
    return line.bbox.height > 1.5 * line.bbox.width


def looks_misoriented(result: OcrResult) -> bool:
    """Most multi-character lines are taller than wide (text runs vertically), or nothing reads well."""
    multi = [ln for ln in result.lines if len(ln.text) >= 4]
    if not multi:
        return True
    tall = sum(stands_on_end(ln) for ln in multi)
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


@dataclasses.dataclass(frozen=True)
class OrientationHints:
    """Domain signals for `read_oriented` (for IDs: see `ingest.extract.identity`)."""

    accept: Callable[[OcrResult], bool] | None = None
    worth_turning: Callable[[OcrResult], bool] | None = None
    # For a reading of text standing on end: which quarter turn (90 or 270) to try first.
    quarter_turn: Callable[[OcrResult], int | None] | None = None


def read_oriented(
    engine: OcrEngine,
    image: np.ndarray,
    *,
    try_rotations: bool = True,
    accept: Callable[[OcrResult], bool] | None = None,
    worth_turning: Callable[[OcrResult], bool] | None = None,
    quarter_turn: Callable[[OcrResult], int | None] | None = None,
) -> OcrResult:
    """Read an image, trying 90/180/270 degree turns when the upright reading looks wrong.

    A reading is accepted when its lines are horizontal and confident, or when `accept` (a
    domain signal, e.g. an MRZ whose check digits pass) says so; `accept` also stops the search
    at the first turn it approves. `worth_turning` flags an upright-looking reading that still
    deserves other turns (filler runs read upside down); for such a reading, whose lines
    already run horizontally, only the half turn is tried. `quarter_turn` says which quarter
    turn to try first for text standing on end. The best-scoring reading wins;
    `OcrResult.rotation` records the turn applied.
    """
    first = engine.read(image)
    if not try_rotations or (accept is not None and accept(first)):
        return first
    if not looks_misoriented(first) and not (worth_turning is not None and worth_turning(first)):
        return first
    if not first.lines:
        return first  # the detector found no text at all: turning the image will not create any
    best, best_score = first, _reading_score(first)
    tall = sum(stands_on_end(ln) for ln in first.lines if len(ln.text) >= 4)
    if tall > len(first.lines) / 3:
        order: tuple[int, ...] = (270, 90, 180) if quarter_turn and quarter_turn(first) == 270 else (90, 270, 180)
    elif looks_misoriented(first):
        order = (180, 90, 270)
    else:
        # Horizontal, confident lines that `worth_turning` still flags: a quarter turn would
        # only stand them on end again, so the half turn is the one other reading worth paying.
        order = (180,)
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


def warm_up(name: str = "rapidocr") -> None:
    """Load the engine's models now rather than inside the first page's reading.

    RapidOCR loads its detection, classification and recognition models on first use (~2 s
    together); timing a batch of documents should not charge that to the first one.
    """
    from PIL import Image, ImageDraw

    sample = Image.new("RGB", (320, 48), "white")
    ImageDraw.Draw(sample).text((8, 16), "P<UTOERIKSSON<<ANNA<MARIA", fill="black")
    get_ocr_engine(name).read(np.asarray(sample))


def get_ocr_engine(name: str = "rapidocr") -> OcrEngine:
    """Shared engine instances: model loading costs ~2 s, reading is what should be paid per page."""
    # One cache entry per engine however it is asked for: `get_ocr_engine()` and
    # `get_ocr_engine("rapidocr")` are different lru_cache keys and loaded the models twice.
    return _engine_named(name)


@lru_cache(maxsize=4)
def _engine_named(name: str) -> OcrEngine:
    if name == "rapidocr":
        log.info("loading the RapidOCR models")
        return RapidOcrEngine()
    if name == "tesseract":
        return TesseractEngine()
    raise ValueError(f"unknown OCR engine {name!r} (available: rapidocr, tesseract)")
