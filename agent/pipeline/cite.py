"""Cite: the answer's citations, from the evidence it kept, and whose words it says they are.

- Quoted lines cite the chunk each line comes from; a comparison the passage stating the limit.
- A generated draft's `[S#]` markers become `[title, p. N]` (a marker naming no shown passage
  is dropped); sentences the model left uncited (each already passed `check`) cite the passages
  they overlap most, and a draft overlapping none declines; other shown passages stating every
  figure of the answer are cited too (the same fee is often in the fee schedule and a product
  page); a draft calling another institution's document "our policy" names it instead.
- The customer's fields a generated answer states are recorded (`fields_used`, audited).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.grounding import cited_ids, numbers_in, overlap_passages, render_citations, split_sentences
from agent.pipeline.types import CheckedDraft, Cited, Draft
from agent.prompt import SourcePassage, neutralise
from docteller.model import Citation, SearchHit


def citation_from_hit(hit: SearchHit, origin: str) -> Citation:
    c = hit.chunk
    return Citation(
        doc_id=c.doc_id, title=c.title, page=c.page_start, chunk_id=c.id, source=c.source, origin=origin,
        publisher=c.publisher if origin == "kb" else None,
    )


class Citer:
    """Draft (quoted or compared) or CheckedDraft (generated) -> Cited."""

    @staticmethod
    def cite(draft: Draft) -> Cited:
        """A quoted or computed draft: its labels are already in the text; one citation per chunk."""
        citations: dict[str, Citation] = {}
        for line in draft.lines:
            citations.setdefault(line.passage.hit.chunk.id, citation_from_hit(line.passage.hit, line.passage.origin))
        for p in draft.passages:
            citations.setdefault(p.hit.chunk.id, citation_from_hit(p.hit, p.origin))
        return Cited(draft.text, list(citations.values()))

    @staticmethod
    def cite_generated(checked: CheckedDraft, fields: dict[str, dict[str, str]]) -> Cited:
        kept = checked.text
        passages = checked.draft.passages
        by_id = {p.sid: p for p in passages}
        cited = [by_id[s] for s in cited_ids(kept) if s in by_id]
        text = render_citations(kept, passages)
        uncited = " ".join(s for s in split_sentences(kept) if not cited_ids(s))
        if uncited.strip() or not cited:
            # Sentences the model left uncited (every kept sentence already passed the support
            # checks) cite the passages they overlap most.
            extra = [p for p in overlap_passages(uncited or kept, passages) if p not in cited]
            if not cited and not extra:
                return Cited("", [], declined="the draft overlaps none of the retrieved passages")
            cited += extra
            if extra:
                text = text.rstrip() + " " + "".join(p.label for p in extra)
        cited += also_supporting(kept, passages, cited)
        text = owned_wording(text, cited)
        used = sorted({name for doc in fields.values() for name, value in doc.items() if value and value in kept})
        return Cited(text, [citation_from_hit(p.hit, p.origin) for p in cited], used)


def also_supporting(
    answer: str, passages: Sequence[SourcePassage], cited: Sequence[SourcePassage]
) -> list[SourcePassage]:
    """Other shown passages that state every figure of the answer: the same fee is often in
    both the fee schedule and a product page, and both are legitimate sources to cite."""
    figures = {n for n in numbers_in(answer) if n > 10 or n != n.to_integral_value()}
    if not figures:
        return []
    return [
        p for p in passages
        if p not in cited and figures <= numbers_in(neutralise(p.hit.chunk.text)[0])
    ]


_OUR_POLICY_RE = re.compile(r"\b(?:our|the bank's) polic(?:y|ies)\b", re.IGNORECASE)


def owned_wording(text: str, cited: Sequence[SourcePassage]) -> str:
    """A drafted answer that calls another institution's document "our policy" names it instead:
    "our policy" is only ever said of the bank's own documents."""
    if not cited or any(p.origin == "kb" and p.publisher is None for p in cited):
        return text
    owners = list(dict.fromkeys(p.owner for p in cited if p.publisher))
    if not owners:
        return text
    name = owners[0] if len(owners) == 1 else "the cited documents"
    return _OUR_POLICY_RE.sub(name, text)
