"""Retrieval quality on the eval set: hit@1, hit@k and MRR over answerable questions.

A hit is a retrieved chunk from the right document (matched by file name) whose page range
contains the right page (any page when the question names none).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from docteller.model import Chunk


class EvalQuestion(BaseModel):
    id: str
    question: str
    answerable: bool = True
    doc: str | None = None
    page: int | None = None
    answer: str | None = None
    must_include: list[str] = []


class RetrievalReport(BaseModel):
    questions: int
    k: int
    hit_at_1: float
    hit_at_k: float
    mrr: float
    misses: list[dict] = []


def load_questions(path: Path) -> list[EvalQuestion]:
    with open(path, encoding="utf-8") as fh:
        return [EvalQuestion.model_validate_json(line) for line in fh if line.strip()]


def is_hit(chunk: Chunk, question: EvalQuestion) -> bool:
    if question.doc is None or Path(chunk.source).name != Path(question.doc).name:
        return False
    return question.page is None or chunk.page_start <= question.page <= chunk.page_end


def evaluate_retrieval(index, questions: list[EvalQuestion], k: int = 5) -> RetrievalReport:
    answerable = [q for q in questions if q.answerable and q.doc]
    hits1 = hitsk = 0
    reciprocal = 0.0
    misses = []
    for q in answerable:
        hits = index.search(q.question, k=k)
        rank = next((i for i, h in enumerate(hits, start=1) if is_hit(h.chunk, q)), None)
        if rank is not None:
            hitsk += 1
            hits1 += rank == 1
            reciprocal += 1.0 / rank
        else:
            got = [f"{Path(h.chunk.source).name} p.{h.chunk.page_start}" for h in hits[:3]]
            misses.append({"id": q.id, "question": q.question, "doc": q.doc, "page": q.page, "got": got})
    n = max(len(answerable), 1)
    return RetrievalReport(
        questions=len(answerable), k=k, hit_at_1=hits1 / n, hit_at_k=hitsk / n, mrr=reciprocal / n, misses=misses
    )
