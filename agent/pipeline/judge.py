"""Judge: do the selected lines answer the question, or is it declined?

- Extractive style: the answerability verifier (`agent.verifier`) decides from how much of the
  question the judged lines cover (and, when it was fitted with it, the chat model's probability
  that they state the answer, `judge_probability`). A question about the customer's own upload
  is answered from its passages without it (the verifier learned from the bank's KB text), and
  an amount-vs-limit question is decided in code instead.
- Both styles, first: a question naming something no document of the KB mentions
  ("What are Revolut's transfer fees?" of a bank whose documents never say "Revolut") is declined,
  and the decline says which name (`agent.grounding.names_the_kb_never_mentions`).
- Extractive style, before the verifier: a question naming one thing at most ("what's the
  cap?") whose lines state different values under different topics is answered with a question
  back: which one (`alternatives`).
- Extractive style, under load: a question whose judgement would wait for the chat model longer
  than `Settings.model_max_wait_s` (the served app's queue for it, `AgentResources.model_too_busy`) is
  decided by the lexical verifier, without the model's P(yes); its reason says the model was busy.
- Generative style: there is no verifier (the draft is checked afterwards, `check`), but a name
  the question uses that no retrieved passage mentions ("What does Chase charge…") declines.

Ablation (`AlwaysAnswerable`): every question is answered from whatever evidence was selected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.backends.choices import choice_from_text
from agent.evidence import EvidenceLine, expected_answers, plain_heading
from agent.grounding import clarifying_text, names_the_kb_never_mentions, unknown_entities, unnamed_decline_text
from agent.pipeline.retrieve import KB_TOP_K
from agent.pipeline.types import Evidence, Judgement, Query, Retrieved
from agent.prompt import JUDGE_CHOICES, build_judge_messages
from agent.verifier import question_terms
from docteller.model import SearchHit
from docteller.protocols import ChatModel, ChoiceScorer

if TYPE_CHECKING:
    from agent.resources import AgentResources

log = logging.getLogger(__name__)


def judge_probability(model: ChatModel, question: str, lines: Sequence[str]) -> float:
    """The model's probability that `lines` state the answer to `question` (one forward pass
    where the backend exposes token probabilities; otherwise 1 or 0 from a short greedy reply)."""
    messages = build_judge_messages(question, lines)
    if isinstance(model, ChoiceScorer):
        return model.choice_probabilities(messages, JUDGE_CHOICES)["yes"]
    reply = "".join(model.stream(messages, max_tokens=3, temperature=0.0))
    return choice_from_text(reply, JUDGE_CHOICES)["yes"]


class Judge:
    """Query + Retrieved + Evidence -> Judgement."""

    def __init__(self, resources: AgentResources) -> None:
        self.resources = resources

    def judge(self, query: Query, found: Retrieved, evidence: Evidence) -> Judgement:
        if not found.own and evidence.comparison is None:
            foreign = [name for name in names_the_kb_never_mentions(query.question, self.resources.kb.term_frequencies)
                       if not _mentioned(name, found.upload_hits)]
            if foreign:
                return Judgement(False, f"the KB never mentions {', '.join(foreign)}",
                                 decline_text=unnamed_decline_text(foreign))
        if self.resources.settings.answer_style == "generative":
            return self._generative(query, found)
        return self._extractive(query, found, evidence)

    @staticmethod
    def _generative(query: Query, found: Retrieved) -> Judgement:
        strangers = unknown_entities(
            query.question, [h.chunk.embedding_text() for h in found.kb_hits[:KB_TOP_K] + found.upload_hits]
        )
        if strangers:
            return Judgement(False, f"the evidence never mentions {', '.join(strangers)}")
        return Judgement(True)

    def _extractive(self, query: Query, found: Retrieved, evidence: Evidence) -> Judgement:
        if evidence.comparison is not None:
            return Judgement(True, "amount compared with the limit in code")
        if not evidence.lines:
            return Judgement(False, "no evidence lines")
        if found.own:
            return Judgement(True, "the customer's own document, asked about")
        topics = alternatives(query.text, evidence.lines)
        if topics:
            return Judgement(False, f"underspecified: different answers under {'; '.join(topics)}",
                             decline_text=clarifying_text(topics))
        verifier = self.resources.verifier
        probability = None
        busy = ""
        if verifier.uses_judge:
            wait = self.resources.model_too_busy()
            if wait is not None:
                verifier = self.resources.lexical_verifier
                busy = f"the chat model was busy (≈ {wait:.0f} s wait), so "
                log.info("judged without the chat model: ≈ %.1f s wait for it", wait)
            else:
                probability = judge_probability(self.resources.chat_model, query.text,
                                                [line.text for line in evidence.lines])
        verdict = verifier.decide(query.text, evidence.lines, probability)
        return Judgement(verdict.answerable, busy + verdict.reason, probability, verdict)


CLARIFY_OPTIONS = 4  # at most this many topics are offered to choose from


def alternatives(question: str, lines: Sequence[EvidenceLine]) -> list[str]:
    """The topics to ask the customer to choose from when the question names one thing at most
    ("what's the cap?", "charges?") and the judged lines state different values of the kind it
    asks for under different topics (sections, FAQ questions, documents); else []. Quoting one of
    them would answer a question the customer may not have asked."""
    wanted = expected_answers(question)
    if not wanted or len(question_terms(question)) > 1:
        return []
    values: set[tuple[str, ...]] = set()
    topics: list[str] = []
    for line in lines:
        found = tuple(sorted({m.group(0).lower() for p in wanted for m in p.finditer(line.text)}))
        if not found:
            continue
        values.add(found)
        topic = _topic(line)
        if topic and topic not in topics:
            topics.append(topic)
    return topics[:CLARIFY_OPTIONS] if len(values) > 1 and len(topics) > 1 else []


def _topic(line: EvidenceLine) -> str | None:
    """What a line is about, as a customer could pick it: its section, the FAQ question it
    answers, its chunk's heading, or its document's title."""
    chunk = line.passage.hit.chunk
    unit = line.unit
    topic = (unit.section if unit else None) or (unit.context if unit else None) \
        or (chunk.heading_path[-1] if chunk.heading_path else None) or chunk.title
    topic = plain_heading((topic or "").strip()).rstrip("?:. ")
    return topic[:80] or None


def _mentioned(name: str, hits: Sequence[SearchHit]) -> bool:
    """The customer's uploaded passages name it (a merchant on their statement)."""
    return any(name.lower() in h.chunk.text.lower() for h in hits)


class AlwaysAnswerable:
    """Ablation pass-through: nothing is declined for the evidence it has."""

    def judge(self, query: Query, found: Retrieved, evidence: Evidence) -> Judgement:
        return Judgement(True, "not judged (judge ablated)")
