"""The answer path, run stage by stage (`AnswerPipeline`), and what an ablation replaces."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.grounding import DECLINE_TEXT
from agent.pipeline.check import DraftCheck, Unchecked
from agent.pipeline.cite import Citer
from agent.pipeline.compose import Composer
from agent.pipeline.judge import AlwaysAnswerable, Judge
from agent.pipeline.retrieve import Retriever
from agent.pipeline.rewrite import AsAsked, Rewriter
from agent.pipeline.route import route
from agent.pipeline.select import EvidenceSelection, RetrievalOrder
from agent.pipeline.types import Answer, AnswerEvent, Judgement, Query, Turn
from docteller.cancel import check as check_cancelled

if TYPE_CHECKING:
    from agent.resources import AgentResources

# Records the answer (history, audit log) before it is shown: `ChatSession._finish`.
Finish = Callable[[Answer, Sequence[str]], Answer]


@dataclass(frozen=True)
class Ablation:
    """A stage replaced by a pass-through, to measure what the stage is worth."""

    name: str
    replaces: str  # what the pass-through does instead
    styles: frozenset[str] = frozenset({"extractive", "generative"})  # answer styles it changes


ABLATIONS: dict[str, Ablation] = {a.name: a for a in [
    Ablation("rewrite", "a follow-up is searched as asked, not made standalone"),
    Ablation("prefilter", "nothing is declined for weak evidence and every KB hit is kept as evidence"),
    Ablation("units", "no unit search: the evidence pool is the chunk search's hits only"),
    Ablation("select", "the units in retrieval order, scored by their chunk's similarity (no re-scoring)"),
    Ablation("judge", "every question is answered: no verifier (extractive), no unknown-name decline (generative)"),
    Ablation("check", "a generated draft is kept as written: figures and wording unchecked",
             frozenset({"generative"})),
]}


class AnswerPipeline:
    """route → rewrite → retrieve → select → judge → compose → check → cite.

    One per `AgentResources` (stages hold no per-question state; each reads the resources when
    called, so a swapped chat model or setting takes effect). `ablate` names stages
    (`ABLATIONS`) replaced by their pass-throughs."""

    def __init__(self, resources: AgentResources, ablate: Collection[str] = ()) -> None:
        unknown = set(ablate) - set(ABLATIONS)
        if unknown:
            raise ValueError(f"no such stage to ablate: {', '.join(sorted(unknown))} (one of {', '.join(ABLATIONS)})")
        self.resources = resources
        self.ablated = frozenset(ablate)
        off = self.ablated.__contains__
        self.rewriter = AsAsked() if off("rewrite") else Rewriter(resources)
        self.retriever = Retriever(resources, prefilter=not off("prefilter"), unit_search=not off("units"))
        self.selector = RetrievalOrder(resources) if off("select") else EvidenceSelection(resources)
        self.judge = AlwaysAnswerable() if off("judge") else Judge(resources)
        self.composer = Composer(resources)
        self.checker = Unchecked() if off("check") else DraftCheck()
        self.citer = Citer()

    # -- entry points ------------------------------------------------------------------------

    def run(self, turn: Turn, finish: Finish) -> Iterator[AnswerEvent]:
        """The turn's answer: tokens as they are written, then the final, recorded answer."""
        path = route(turn)
        if path.kind == "empty":
            yield AnswerEvent(kind="final", answer=self.answer(turn, "Please type a question.", abstained=True,
                                                               reason="empty question"))
        elif path.kind == "handoff":
            yield from _whole(finish(self.handoff(turn), ()))
        elif path.kind == "document":
            doc = path.doc_answer
            assert doc is not None
            answer = self.answer(turn, doc.text, citations=list(doc.citations), fields_used=doc.fields_used,
                                 abstained=not doc.fields_used, reason="computed from the uploaded document")
            yield from _whole(finish(answer, ()))
        else:
            yield from self.grounded(turn, finish)

    def handoff(self, turn: Turn) -> Answer:
        text, citations = self.resources.contact_answer()
        return self.answer(turn, text, citations=citations, handoff=True, reason="customer asked for a person")

    def standalone_query(self, turn: Turn) -> Query:
        return self.rewriter.rewrite(turn)

    def answer(self, turn: Turn, text: str, **kw: Any) -> Answer:
        return Answer(question=turn.question, answer=text, model=self.resources.model_label,
                      session_id=turn.session_id, **kw)

    # -- the grounded path -------------------------------------------------------------------

    def grounded(self, turn: Turn, finish: Finish) -> Iterator[AnswerEvent]:
        query = self.rewriter.rewrite(turn)
        found = self.retriever.retrieve(query, turn)

        def declined(reason: str | None, judgement: Judgement | None = None) -> Answer:
            text = (judgement.decline_text if judgement is not None else None) or DECLINE_TEXT
            answer = self.answer(turn, text, abstained=True, standalone_query=query.standalone, reason=reason)
            if judgement is not None:
                _judged(answer, judgement)
            return finish(answer, found.retrieved_ids)

        if found.declined:
            yield from _whole(declined(found.declined))
            return
        evidence = self.selector.select(query, found)
        judgement = self.judge.judge(query, found, evidence)
        if not judgement.answerable:
            yield from _whole(declined(judgement.reason, judgement))
            return

        if evidence.comparison is not None:
            cited = self.citer.cite(self.composer.compare(query, evidence))
            answer = self.answer(turn, cited.text, citations=cited.citations, standalone_query=query.standalone,
                                 reason="amount compared with the limit in code")
            yield from _whole(finish(answer, found.retrieved_ids))
            return

        if self.resources.settings.answer_style == "extractive":
            draft = self.composer.quote(query, evidence)
            if draft.declined:
                yield from _whole(declined(draft.declined))
                return
            cited = self.citer.cite(draft)
            answer = self.answer(
                turn, cited.text, citations=cited.citations, standalone_query=query.standalone,
                reason=f"quoted the best {len(draft.lines)} of {draft.considered} evidence lines; {judgement.reason}",
            )
            yield from _whole(finish(_judged(answer, judgement), found.retrieved_ids))
            return

        # Generative: the draft's tokens have streamed by the time it is checked; the final
        # event's answer (checked, or a decline) is what counts.
        draft = yield from self.composer.write(query, evidence, turn)
        checked = self.checker.check(query, draft, turn.fields)
        if checked.declined:
            yield AnswerEvent(kind="final", answer=declined(checked.declined))
            return
        cited = self.citer.cite_generated(checked, turn.fields)
        if cited.declined:
            yield AnswerEvent(kind="final", answer=declined(cited.declined))
            return
        reason = ("model answer, figures checked against the evidence" if checked.checked
                  else "model answer, not checked (check ablated)")
        answer = self.answer(turn, cited.text, citations=cited.citations, fields_used=cited.fields_used,
                             standalone_query=query.standalone, reason=reason)
        yield AnswerEvent(kind="final", answer=finish(answer, found.retrieved_ids))


def _judged(answer: Answer, judgement: Judgement) -> Answer:
    answer.evidence_judgement = round(judgement.probability, 4) if judgement.probability is not None else None
    answer.verdict = judgement.verdict
    return answer


def _whole(answer: Answer) -> Iterator[AnswerEvent]:
    """An answer composed whole, sent a sentence or a line at a time, then the final event."""
    yield from progressive_tokens(answer.answer)
    yield AnswerEvent(kind="final", answer=answer)


# Where an answer composed whole may be cut for streaming: after a line break, or after a
# sentence's end followed by the start of the next one (never inside "p. 1" of a citation).
_PIECE_END_RE = re.compile(r"\n+|(?<=[.!?”\]])\s+(?=[A-Z“\"(-])")


def answer_pieces(text: str) -> list[str]:
    """`text` cut into its sentences and lines, whitespace kept: the pieces join back to `text`."""
    pieces: list[str] = []
    start = 0
    for m in _PIECE_END_RE.finditer(text):
        pieces.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def progressive_tokens(text: str) -> Iterator[AnswerEvent]:
    """An answer composed whole (quoted lines, a computed answer, a decline) sent a sentence or a
    line at a time, through the same token stream a generated answer uses: the customer reads
    the direct answer while the quotes follow."""
    for piece in answer_pieces(text):
        check_cancelled()
        yield AnswerEvent(kind="token", text=piece)
