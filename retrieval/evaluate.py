"""Retrieval quality on an eval set: hit@1, hit@k and MRR over answerable questions.

A hit is a retrieved chunk from the right document (matched by file name) whose page range
contains the right page (any page when the question names none) and, when the question names a
`span` (a few words of the answering text), whose text contains that span (case and whitespace
ignored): a statute or an FAQ sheet is one "page", so the page alone says nothing there.

`open_eval_kb` indexes any folder(s) of documents into an index of their own under
`$DOCTELLER_HOME/eval-kbs/`, so one eval set can be measured against another KB than the bundled
one (`docteller eval retrieval --kb DIR --questions FILE`) without touching the served index.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from docteller.model import Chunk
from docteller.protocols import UnitSplitter
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)


class EvalQuestion(BaseModel):
    id: str
    question: str
    answerable: bool = True
    doc: str | None = None
    page: int | None = None
    answer: str | None = None
    must_include: list[str] = []
    span: str | None = None  # words of the answering text the hit chunk must contain
    key_fact: str | None = None  # the one fact a customer needs in the answer (`eval answers`)
    split: str | None = None  # "dev" (may be tuned on) or "test" (written before tuning, never tuned on)


class RetrievalReport(BaseModel):
    questions: int
    k: int
    hit_at_1: float
    hit_at_k: float
    mrr: float
    misses: list[dict] = []


def load_questions(path: Path) -> list[EvalQuestion]:
    """The questions of a JSONL file; a bad line raises `ValueError` naming the file and line."""
    questions = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    questions.append(EvalQuestion.model_validate_json(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not an eval question ({exc})") from exc
    return questions


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'")).strip().lower()


def is_hit(chunk: Chunk, question: EvalQuestion) -> bool:
    if question.doc is None or Path(chunk.source).name != Path(question.doc).name:
        return False
    if question.page is not None and not chunk.page_start <= question.page <= chunk.page_end:
        return False
    return question.span is None or _normalised(question.span) in _normalised(chunk.text)


def eval_index_dir(paths: Sequence[Path], settings: Settings | None = None) -> Path:
    """Where the index of these KB paths lives: one folder per set of paths, so re-running an
    eval re-uses it (unchanged files are not re-read) and never touches the served index."""
    settings = settings or get_settings()
    key = "\n".join(sorted(str(Path(p).resolve()) for p in paths))
    return settings.home / "eval-kbs" / hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def open_eval_kb(paths: Sequence[Path], settings: Settings | None = None, embedder=None,
                 splitter: UnitSplitter | None = None):
    """A `KnowledgeIndex` holding exactly the documents under `paths` (files or folders),
    indexed on first use and brought up to date (changed files re-read, removed ones dropped).

    `splitter`: the agent's evidence units (`agent.evidence.KBUnitTexts`), split, embedded and
    brought up to date as the agent keeps them: search fuses each chunk's best unit into its
    ranking, so a retrieval eval with them measures the search the agent runs."""
    from ingest.loading import iter_files
    from retrieval.indexing import index_paths
    from retrieval.store import KnowledgeIndex

    settings = settings or get_settings()
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"knowledge base path not found: {', '.join(missing)}")
    index = KnowledgeIndex.open(eval_index_dir(paths, settings), embedder=embedder)
    if splitter is not None:
        index.unit_splitter = splitter
    summary = index_paths([Path(p) for p in paths], settings=settings, index=index)
    for failed in summary.failed:
        log.warning("%s: %s", failed.path, failed.reason)
    present = {str(p) for p in iter_files([Path(p) for p in paths])}
    for record in index.documents():
        if record.source not in present:
            index.delete(record.doc_id)
    if splitter is not None:
        index.sync_units()
    return index


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
