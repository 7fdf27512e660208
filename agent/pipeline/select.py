"""Select evidence: the retrieved chunks' units (sentences, list items, table rows, FAQ answers)
scored for the query (`agent.evidence.EvidenceSelector`: similarity, shared rare terms, the
chunk's own similarity, the kind of value asked for), kept within a budget as

- numbered passages (`S1`…) for a generated answer's prompt, and
- quotable lines for an extractive answer (the few the verifier judges),

and, for an amount-vs-limit question ("can I deposit $12,000?"), the passage stating the limit
(`compare_amount_to_limit`): the answer is then decided in code.

Ablation (`RetrievalOrder`): the units in the order retrieval returned their chunks, each
scored by its chunk's similarity, nothing re-scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.evidence import EvidenceSelector, ScoredUnit
from agent.grounding import compare_amount_to_limit
from agent.pipeline.types import Evidence, Query, Retrieved

if TYPE_CHECKING:
    from agent.resources import AgentResources

PROMPT_PASSAGES = 4
EVIDENCE_CHARS = 600  # ≈ 150 prompt tokens of evidence: see agent.evidence
EVIDENCE_LINE_CHARS = 560  # extractive answers: the numbered lines the model judges…
JUDGED_LINES = 3  # …at most this many (≈ 100 prompt tokens: the judgement takes ≈ 1 s on 2 cores)


class EvidenceSelection:
    """Query + Retrieved -> Evidence."""

    def __init__(self, resources: AgentResources) -> None:
        self.resources = resources

    def score(self, query: Query, found: Retrieved) -> list[ScoredUnit]:
        return self.resources.evidence.score(query.text, found.pool, found.upload_hits)

    def select(self, query: Query, found: Retrieved) -> Evidence:
        scored = self.score(query, found)  # once: both answer styles use it
        passages = EvidenceSelector.select(scored, budget_chars=EVIDENCE_CHARS, max_passages=PROMPT_PASSAGES)
        lines = EvidenceSelector.lines(scored, budget_chars=EVIDENCE_LINE_CHARS, max_lines=JUDGED_LINES, question=query.text)
        return Evidence(scored, passages, lines, compare_amount_to_limit(query.question, passages))


class RetrievalOrder(EvidenceSelection):
    """Ablation pass-through: units in retrieval order (the upload's hits, then the KB's), each
    with its chunk's similarity as its score."""

    def score(self, query: Query, found: Retrieved) -> list[ScoredUnit]:
        scored = []
        for hit, origin in [(h, "upload") for h in found.upload_hits] + [(h, "kb") for h in found.pool]:
            units, _ = self.resources.evidence.units(hit.chunk, origin)
            scored += [ScoredUnit(unit, hit, origin, hit.vector_score or 0.0) for unit in units]
        return scored
