"""What the answer pipeline's stages take and give: one typed value per hand-over.

A stage reads the value(s) before it and returns a new one; nothing is passed through hidden
session state, so each stage can be called (and measured) on its own and replaced by a
pass-through (`agent.pipeline.AnswerPipeline(ablate=...)`).

    Turn ─route→ Route ─rewrite→ Query ─retrieve→ Retrieved ─select→ Evidence ─judge→ Judgement
         ─compose→ Draft ─check→ CheckedDraft ─cite→ Cited  →  Answer (+ AnswerEvents)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field as PydanticField

from agent.doc_answers import DocAnswer
from agent.evidence import EvidenceLine, ScoredUnit
from agent.grounding import Comparison
from agent.prompt import SourcePassage
from agent.verifier import Verdict
from docteller.model import Citation, SearchHit, UploadedDocument, one_per_page
from docteller.protocols import KnowledgeBase

# --- the public result ----------------------------------------------------------------------


class Answer(BaseModel):
    """The final, checked answer. `answer` is authoritative (streamed tokens are a preview)."""

    question: str
    answer: str
    citations: list[Citation] = PydanticField(default_factory=list)
    abstained: bool = False
    fields_used: list[str] = PydanticField(default_factory=list)
    model: str = ""
    handoff: bool = False
    standalone_query: str | None = None
    reason: str | None = None  # why it abstained / how it was answered
    session_id: str = ""
    # Extractive answers: the model's probability that the evidence lines answer the question,
    # and the answerability verifier's decision (`agent.verifier`) that used it.
    evidence_judgement: float | None = None
    verdict: Verdict | None = None

    def sources(self) -> list[Citation]:
        """The citations once per document page (two quoted lines of one page cite two chunks)."""
        return one_per_page(self.citations)

    def as_cli_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "citations": [
                {"doc_id": c.doc_id, "title": c.title, "page": c.page, **({"publisher": c.publisher} if c.publisher else {})}
                for c in self.sources()
            ],
            "abstained": self.abstained,
            # Why it was declined or how it was answered (the verifier's decision, a busy model …).
            "reason": self.reason,
            "fields_used": self.fields_used,
            "model": self.model,
        }


class AnswerEvent(BaseModel):
    """`kind="token"`: a piece of text to append; `kind="final"`: `answer` holds the result."""

    kind: Literal["token", "final"]
    text: str = ""
    answer: Answer | None = None


# --- stage inputs and outputs -----------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One question and what the pipeline may read of its conversation (the session owns it)."""

    question: str  # stripped
    session_id: str = ""
    history: tuple[tuple[str, str], ...] = ()  # (question, answer), oldest first
    last_query: str | None = None  # the previous question as it was searched
    offered_person: bool = False  # the previous answer offered to connect the customer with a person
    uploads: tuple[UploadedDocument, ...] = ()
    upload_index: KnowledgeBase | None = None  # the uploads' passages; None without uploads
    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # masked, for a generated answer's prompt
    images: tuple[Any, ...] = ()  # upload pages for a vision-language model


@dataclass(frozen=True)
class Route:
    """Which path answers the turn."""

    kind: Literal["empty", "handoff", "document", "grounded"]
    doc_answer: DocAnswer | None = None  # kind "document": computed from the upload's fields


@dataclass(frozen=True)
class Query:
    """The question as asked and as searched (a follow-up made standalone)."""

    question: str
    text: str

    @property
    def standalone(self) -> str | None:
        """The rewritten query, or None when the question is searched as asked."""
        return self.text if self.text != self.question else None


@dataclass
class Retrieved:
    """What one question retrieved."""

    upload_hits: list[SearchHit]  # the upload's passages that are evidence
    kb_hits: list[SearchHit]  # the KB's hits as searched (the first `KB_TOP_K` set the strength)
    pool: list[SearchHit]  # the KB hits kept as evidence: pre-filtered, plus the unit search's
    own: bool  # the question is about the customer's own upload: the KB is not searched
    retrieved_ids: list[str]  # every chunk seen, for the audit log
    strength: float  # the best KB hit's similarity, compared with the calibrated threshold
    declined: str | None = None  # why the pre-filter declines the question (weak evidence)


@dataclass
class Evidence:
    """The retrieved units scored for the question, as numbered passages (a generated answer's
    prompt) and as quotable lines (an extractive answer), and an amount-vs-limit question's
    deciding passage when one is found."""

    scored: list[ScoredUnit]
    passages: list[SourcePassage]
    lines: list[EvidenceLine]
    comparison: Comparison | None = None


@dataclass(frozen=True)
class Judgement:
    """Whether the evidence answers the question, and why."""

    answerable: bool
    reason: str | None = None
    probability: float | None = None  # the chat model's P(the lines answer), when it was asked
    verdict: Verdict | None = None  # the answerability verifier's decision, when it decided
    decline_text: str | None = None  # what the customer reads when declined (None: the usual decline)


@dataclass
class Draft:
    """An answer before its checks and citations: quoted lines, a computed comparison, or the
    chat model's text with `[S#]` markers."""

    text: str
    style: Literal["quoted", "compared", "generated"]
    passages: list[SourcePassage] = field(default_factory=list)  # a generated draft's numbered passages
    lines: list[EvidenceLine] = field(default_factory=list)  # quoted: the lines it quotes
    considered: int = 0  # quoted: how many judged lines it chose from
    declined: str | None = None  # why no draft could be written


@dataclass
class CheckedDraft:
    """A draft with what its evidence does not support removed; `declined` when nothing is left."""

    text: str
    draft: Draft
    unsupported_figures: list[str] = field(default_factory=list)
    dropped_sentences: list[str] = field(default_factory=list)
    checked: bool = True  # False: passed through unchecked (the check ablated)
    declined: str | None = None


@dataclass
class Cited:
    """The answer's text as shown (citations rendered) and the sources it cites."""

    text: str
    citations: list[Citation]
    fields_used: list[str] = field(default_factory=list)
    declined: str | None = None
