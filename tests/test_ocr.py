"""OCR layer: engines behind the protocol, orientation, deskew, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from docteller.protocols import OcrEngine
from ingest.ocr import deskew, get_ocr_engine, read_oriented, rotate_image, tesseract_available, to_grayscale_contrast
from ingest.sniff import open_image


@pytest.fixture(scope="module")
def mrz_crop(corpus):
    image = np.asarray(open_image(corpus / "ids" / "passporteye" / "tests_data" / "passport-td3.jpg"))
    return image[640:780]  # the two MRZ lines of the specimen passport


def test_rapidocr_reads_mrz_lines(mrz_crop):
    engine = get_ocr_engine("rapidocr")
    assert isinstance(engine, OcrEngine)
    result = engine.read(mrz_crop)
    text = result.text.replace(" ", "")
    assert "ERIKSSON<<ANNA<MARIA" in text
    assert "ZE184226B" in text
    assert result.lines[0].bbox.y0 < result.lines[-1].bbox.y0  # reading order


def test_sideways_photo_is_turned(mrz_crop):
    from ingest.extract.identity import mrz_check_digits_pass
    from ingest.extract.mrz import find_mrz

    from ingest.ocr import limit_size

    engine = get_ocr_engine("rapidocr")
    small, _ = limit_size(mrz_crop, 800)  # keeps the up-to-4 readings of this test cheap
    sideways = rotate_image(small, 90)
    # Vertical text boxes: the turn that makes the lines horizontal and confident wins.
    result = read_oriented(engine, sideways)
    assert result.rotation == 270
    assert "ERIKSSON<<ANNA" in result.text.replace(" ", "")
    # With the MRZ acceptance test the zone reads (PP-OCR can read tall boxes; the finder
    # copes with their column order), whichever turn gets there first.
    accepted = read_oriented(engine, sideways, accept=mrz_check_digits_pass)
    assert find_mrz(accepted.lines).fields["surname"] == "ERIKSSON"


def test_passport_photo_on_its_side_is_turned_toward_its_mrz_first(corpus, monkeypatch):
    from PIL import Image

    from ingest.extract.identity import id_orientation_hints, mrz_check_digits_pass, mrz_quarter_turn
    from ingest.ocr import limit_size

    # The Latvian specimen lies with its MRZ on the left: a 270 degree turn brings it down.
    photo = np.asarray(Image.open(corpus / "ids" / "passporteye" / "mrz_testdata" / "0_pass-lva.jpg").convert("RGB"))
    small, _ = limit_size(photo, 1000)
    engine = get_ocr_engine("rapidocr")
    assert mrz_quarter_turn(engine.read(small)) == 270
    assert mrz_quarter_turn(engine.read(rotate_image(small, 180))) == 90  # zone on the right
    reads = []
    original = engine.read
    monkeypatch.setattr(engine, "read", lambda image: reads.append(image.shape) or original(image))
    hints = id_orientation_hints()
    result = read_oriented(engine, small, accept=hints.accept, worth_turning=hints.worth_turning, quarter_turn=hints.quarter_turn)
    assert result.rotation == 270 and mrz_check_digits_pass(result)
    assert len(reads) == 2  # upright, then straight to the right quarter turn


def test_upside_down_photo_is_turned(mrz_crop):
    from ingest.extract.identity import mrz_check_digits_pass, mrz_hint

    # Upright-looking boxes, but the filler runs read as '>>>': worth trying other turns.
    engine = get_ocr_engine("rapidocr")
    result = read_oriented(engine, rotate_image(mrz_crop, 180), accept=mrz_check_digits_pass, worth_turning=mrz_hint)
    assert result.rotation == 180 and mrz_check_digits_pass(result)


def test_rotate_round_trip():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert rotate_image(image, 90).shape == (3, 2, 3)
    assert np.array_equal(rotate_image(rotate_image(image, 90), 270), image)


def test_deskew_recovers_small_angle(mrz_crop):
    from PIL import Image

    tilted = np.asarray(Image.fromarray(mrz_crop).rotate(4, expand=True, fillcolor=(255, 255, 255)))
    _, angle = deskew(tilted)
    assert -5.5 <= angle <= -2.5


def test_grayscale_contrast_keeps_shape(mrz_crop):
    dim = (mrz_crop.astype(np.float32) * 0.4 + 60).astype(np.uint8)
    out = to_grayscale_contrast(dim)
    assert out.shape == dim.shape and out.max() - out.min() > dim.max() - dim.min()


@pytest.mark.skipif(not tesseract_available(), reason="tesseract not installed")
def test_tesseract_second_opinion(mrz_crop):
    result = get_ocr_engine("tesseract").read(mrz_crop)
    assert result.engine == "tesseract"
    assert "ERIKSSON" in result.text.replace(" ", "")


def test_engine_is_loaded_once():
    # The default name and the explicit one must share one set of models (they used to be
    # separate lru_cache keys, so two copies of the models were loaded).
    assert get_ocr_engine() is get_ocr_engine("rapidocr")


def test_repeated_read_comes_from_the_cache(mrz_crop, monkeypatch):
    engine = get_ocr_engine("rapidocr")
    first = engine.read(mrz_crop)
    first.rotation = 90  # callers tag what they get: that must not leak into the cache

    calls = []
    real = engine._engine
    monkeypatch.setattr(engine, "_engine", lambda image: calls.append(image.shape) or real(image))
    again = engine.read(mrz_crop.copy())  # equal pixels, another array
    assert calls == []
    assert again.rotation == 0 and again.text == first.text
    top_line = np.ascontiguousarray(mrz_crop[:70])  # other pixels: a real reading
    other = engine.read(top_line)
    assert calls == [top_line.shape]
    assert other.text != first.text


class _ScriptedEngine:
    """Returns a fixed reading and records the shapes it was asked to read."""

    name = "scripted"

    def __init__(self, reading):
        self.reading = reading
        self.shapes = []

    def read(self, image):
        from docteller.protocols import OcrResult

        self.shapes.append(image.shape[:2])
        return OcrResult(lines=list(self.reading.lines), width=image.shape[1], height=image.shape[0], engine=self.name)


def _reading(texts, tall=False):
    from docteller.model import BBox
    from docteller.protocols import OcrLine, OcrResult

    lines = []
    for i, text in enumerate(texts):
        box = BBox(x0=10 + 30 * i, y0=10, x1=30 + 30 * i, y1=400) if tall else BBox(x0=10, y0=10 + 30 * i, x1=400, y1=30 + 30 * i)
        lines.append(OcrLine(text=text, bbox=box, confidence=0.95))
    return OcrResult(lines=lines, width=420, height=420, engine="scripted")


def test_horizontal_reading_flagged_for_turning_tries_only_the_half_turn():
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    engine = _ScriptedEngine(_reading(["P>UTOERIKSSON>>ANNA>>>>>>", "L898902C36UTO7408122F"]))
    result = read_oriented(engine, image, worth_turning=lambda r: True)
    # Upright, then 180 degrees (same shape); no quarter turns (which would swap the shape).
    assert engine.shapes == [(300, 200), (300, 200)]
    assert result.rotation == 0  # the scripted turn reads no better, so upright stays


def test_vertical_reading_tries_quarter_turns_first():
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    engine = _ScriptedEngine(_reading(["THIS PASSPORT", "CONTAINS 32 PAGES"], tall=True))
    read_oriented(engine, image)
    assert engine.shapes == [(300, 200), (200, 300), (200, 300), (300, 200)]  # 0, 90, 270, 180
