"""Check: what a generated draft says that its evidence does not support is removed.

- a draft that is empty or is the model's own "I can't find that" declines;
- every figure (amounts and percentages always, counts above 10) must occur in the passage the
  sentence cites, or in the customer's extracted fields or the question itself; a sentence with
  one that does not is dropped (`strip_unsupported`);
- a sentence whose wording is not supported by its passages is dropped
  (`strip_unsupported_wording`);
- nothing left: declined.

Quoted and computed drafts are copied from the evidence and are not checked here (a quoted
answer's lead sentence is checked as it is written, `compose.lead_is_supported`).

Ablation (`Unchecked`): the draft is kept as written (a model's own decline still declines).
"""

from __future__ import annotations

import logging

from agent.grounding import is_model_decline, strip_citations, strip_unsupported, strip_unsupported_wording
from agent.pipeline.types import CheckedDraft, Draft, Query
from agent.prompt import neutralise

log = logging.getLogger(__name__)


class DraftCheck:
    """Draft + the question + the customer's fields -> CheckedDraft."""

    def check(self, query: Query, draft: Draft, fields: dict[str, dict[str, str]]) -> CheckedDraft:
        if not draft.text or is_model_decline(draft.text):
            return CheckedDraft("", draft, declined="the model found no answer in the passages")
        field_values = [v for doc in fields.values() for v in doc.values()]
        by_sid = {p.sid: neutralise(p.hit.chunk.text)[0] for p in draft.passages}
        evidence = [*by_sid.values(), *field_values, query.question]
        kept, unsupported = strip_unsupported(draft.text, evidence, cited_evidence=by_sid)
        if unsupported:
            log.info("stripped unsupported figures %s from a draft answer", sorted(map(str, unsupported)))
        figures = sorted(map(str, unsupported))
        if not kept.strip():
            return CheckedDraft("", draft, figures, declined="the draft's figures are not in the evidence")
        kept, padding = strip_unsupported_wording(kept, [*by_sid.values(), *field_values], cited_evidence=by_sid)
        if padding:
            log.info("dropped %d unsupported sentence(s) from a draft answer", len(padding))
        if not strip_citations(kept).strip(" .\n"):
            return CheckedDraft("", draft, figures, list(padding),
                                declined="the draft's wording is not supported by its passages")
        return CheckedDraft(kept, draft, figures, list(padding))


class Unchecked:
    """Ablation pass-through: the draft as the model wrote it."""

    def check(self, query: Query, draft: Draft, fields: dict[str, dict[str, str]]) -> CheckedDraft:
        if not draft.text or is_model_decline(draft.text):
            return CheckedDraft("", draft, checked=False, declined="the model found no answer in the passages")
        return CheckedDraft(draft.text, draft, checked=False)
