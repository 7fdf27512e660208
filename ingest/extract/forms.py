"""Forms: question -> answer pairs (FUNSD style) from label/value layout, with confidence.

A question is a phrase ending in ':' (or a 'Label: value' phrase); its answer is the text after
the colon, else the nearest phrase to its right on the same row, else the phrase just below.
"""

from __future__ import annotations

import re

from docteller.model import ExtractionResult, Field, Page
from docteller.protocols import OcrLine


def _right_of(q: OcrLine, phrases: list[OcrLine]) -> OcrLine | None:
    yc = (q.bbox.y0 + q.bbox.y1) / 2
    row = [p for p in phrases if p is not q and p.bbox.x0 >= q.bbox.x1 - 2 and abs((p.bbox.y0 + p.bbox.y1) / 2 - yc) < 0.6 * max(q.bbox.height, 1)]
    return min(row, key=lambda p: p.bbox.x0) if row else None


def _below(q: OcrLine, phrases: list[OcrLine]) -> OcrLine | None:
    h = max(q.bbox.height, 1)
    cands = [p for p in phrases if p is not q and 0 <= p.bbox.y0 - q.bbox.y1 < 1.5 * h and p.bbox.x0 < q.bbox.x1 and p.bbox.x1 > q.bbox.x0]
    return min(cands, key=lambda p: p.bbox.y0) if cands else None


def _is_question(text: str) -> bool:
    return text.rstrip().endswith(":")


def form_pairs(phrases: list[OcrLine]) -> list[tuple[str, str, OcrLine, OcrLine | None, float]]:
    pairs = []
    for q in phrases:
        text = q.text.strip()
        m = re.match(r"^([^:]{2,60}):\s*(\S.*)$", text)
        if m and not _is_question(text):
            pairs.append((m.group(1).strip(), m.group(2).strip(), q, None, q.confidence * 0.8))
            continue
        if not _is_question(text):
            continue
        answer = _right_of(q, phrases)
        weight = 0.75
        if answer is None or _is_question(answer.text):
            answer = _below(q, phrases)
            weight = 0.55
        if answer is None or _is_question(answer.text):
            pairs.append((text.rstrip(": "), "", q, None, q.confidence * 0.3))
            continue
        pairs.append((text.rstrip(": "), answer.text.strip(), q, answer, min(q.confidence, answer.confidence) * weight))
    return pairs


def extract_form(result: ExtractionResult, pages: list[Page]) -> None:
    result.doc_type = "form"
    for page in pages:
        for question, answer, q, a, conf in form_pairs(page.phrases):
            key = re.sub(r"\s+", " ", question)
            if not key or key in result.fields:
                continue
            box = q.bbox.union(a.bbox) if a is not None else q.bbox
            result.fields[key] = Field(name=key, value=answer or None, confidence=round(conf, 4), page=page.number, bbox=box, raw=f"{q.text} {a.text if a else ''}".strip(), source="ocr" if page.ocr_used else "text")
    if not result.fields:
        result.warnings.append("no fields found: no 'label:' questions on the form")
