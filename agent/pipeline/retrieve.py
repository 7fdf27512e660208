"""Retrieve: the KB's and the customer's uploads' passages for a query, with a pre-filter.

- The session's uploads are searched first. A question about the customer's own document
  ("what did I pay in rent?", "what name is on my ID?": code computed nothing from the extracted
  fields) is answered from the upload's passages only, never from the bank's policies however
  similar a policy line reads: the KB is not searched.
- Otherwise the KB is searched; the best hit's similarity (`evidence_strength`) is compared with
  the calibrated threshold (`agent/calibration.json`) and a question no policy is near is
  declined here, before any model call (the pre-filter). Hits far below the best are dropped,
  and the chunks of the KB units most similar to the query on their own join the pool
  (`KnowledgeUnits`: a fee table's one answering row ranks low as a whole chunk).

Ablations: `prefilter=False` declines nothing for weak evidence and keeps every hit;
`unit_search=False` leaves the pool to the chunk search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.doc_answers import asks_about_upload, is_policy_question
from agent.grounding import content_words, evidence_strength
from agent.pipeline.types import Query, Retrieved, Turn
from docteller.model import SearchHit

if TYPE_CHECKING:
    from agent.resources import AgentResources

KB_TOP_K = 5  # hits whose best similarity is compared with the calibrated threshold
KB_POOL = 8  # hits whose sentences and table rows compete for the prompt
UNIT_SEARCH_K = 3  # …and the chunks of the KB units most similar on their own (`KnowledgeUnits`)
UPLOAD_TOP_K = 3


class Retriever:
    """Query (+ the turn's uploads) -> Retrieved."""

    def __init__(self, resources: AgentResources, *, prefilter: bool = True, unit_search: bool = True) -> None:
        self.resources = resources
        self.prefilter = prefilter
        self.unit_search = unit_search

    def retrieve(self, query: Query, turn: Turn) -> Retrieved:
        threshold = self.resources.calibration.threshold
        upload_hits: list[SearchHit] = (
            turn.upload_index.search(query.text, k=UPLOAD_TOP_K) if turn.upload_index is not None else []
        )
        own = bool(upload_hits) and (asks_about_upload(query.question) or names_upload_text(query.question, upload_hits))
        kb_hits: list[SearchHit] = [] if own else self.resources.kb.search(query.text, k=KB_POOL)
        retrieved_ids = [h.chunk.id for h in upload_hits + kb_hits]
        strength = evidence_strength(kb_hits[:KB_TOP_K])  # as calibrated
        if not own:
            upload_hits = [h for h in upload_hits if (h.vector_score or 0.0) >= threshold]
        found = Retrieved(upload_hits, kb_hits, list(kb_hits), own, retrieved_ids, strength)
        if self.prefilter:
            if strength < threshold and not upload_hits:
                found.declined = f"weak evidence: best similarity {strength:.3f} < calibrated {threshold:.3f}"
                return found
            floor = max(threshold * 0.9, strength - 0.2)
            found.pool = [h for h in kb_hits if (h.vector_score or 0.0) >= floor]
        if self.unit_search and not own:
            by_unit = self.resources.units.search(query.text, 2 * UNIT_SEARCH_K, exclude={h.chunk.id for h in found.pool})
            by_unit = _new_texts(found.pool, by_unit)[:UNIT_SEARCH_K]
            found.pool += by_unit
            found.retrieved_ids += [h.chunk.id for h in by_unit if h.chunk.id not in found.retrieved_ids]
        return found


def _new_texts(pool: Sequence[SearchHit], hits: Sequence[SearchHit]) -> list[SearchHit]:
    """`hits` less any whose text the pool (or an earlier hit) already holds, up to case, spacing
    and punctuation: a FAQ sheet's repeated row is one passage, not two places in the pool."""
    seen = {_letters(h.chunk.text) for h in pool}
    kept = []
    for hit in hits:
        key = _letters(hit.chunk.text)
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept


def _letters(text: str) -> str:
    return "".join(re.findall(r"[a-z0-9]+", text.lower()))


_POSSESSIVE_RE = re.compile(r"\bmy\s+((?:[a-z0-9-]+\s+){0,2}[a-z0-9-]+)", re.IGNORECASE)


def names_upload_text(question: str, upload_hits: Sequence[SearchHit]) -> bool:
    """The question asks for "my X" and the customer's own document states X ("what was my closing
    balance?" and an upload reading "Opening balance 1,200.00 Closing balance 1,050.00"), and it
    isn't a question about the bank's rules."""
    if is_policy_question(question):
        return False
    text = " ".join(h.chunk.text.lower() for h in upload_hits)
    for phrase in _POSSESSIVE_RE.findall(question):
        words = [w for w in content_words(phrase) if not w.isdigit()]
        if words and all(re.search(rf"\b{re.escape(w)}", text) for w in words):
            return True
    return False
