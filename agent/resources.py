"""What every chat session shares, loaded once per process (`AgentResources`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.audit import AuditLog
from agent.evidence import EvidenceSelector, KBUnitTexts, KnowledgeUnits
from agent.grounding import Calibration, load_calibration
from agent.pipeline import AnswerPipeline
from agent.pipeline.judge import judge_probability
from agent.pipeline.retrieve import KB_POOL
from agent.pipeline.route import contact_from_kb
from agent.prompt import build_messages
from agent.verifier import AnswerabilityVerifier
from docteller.model import Citation
from docteller.protocols import ChatModel, Embedder, KnowledgeBase, QueuedModel
from docteller.settings import Settings, get_settings

if TYPE_CHECKING:
    from agent.session import ChatSession

log = logging.getLogger(__name__)


class AgentResources:
    """Everything sessions share: one KB index, one embedder, one chat model, the audit log, and
    the answer pipeline built on them."""

    def __init__(
        self,
        kb: KnowledgeBase,
        chat_model: ChatModel,
        *,
        embedder: Embedder | None = None,
        settings: Settings | None = None,
        calibration: Calibration | None = None,
        verifier: AnswerabilityVerifier | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.kb = kb
        self.chat_model = chat_model
        self.embedder = embedder
        self.calibration = calibration or load_calibration()
        self.verifier = verifier or AnswerabilityVerifier.for_chat_model(
            chat_model, self.settings.answer_judge, kb.term_frequencies
        )
        self._lexical_verifier: AnswerabilityVerifier | None = None
        self.audit = AuditLog.for_settings(self.settings)
        self.evidence = EvidenceSelector(embedder if embedder is not None else kb.embedder)
        self.units = KnowledgeUnits(self.evidence, kb)
        self.pipeline = AnswerPipeline(self)
        self._contact_cache: tuple[str, list[Citation]] | None = None

    @classmethod
    def load(
        cls,
        settings: Settings | None = None,
        *,
        chat_model: ChatModel | None = None,
        kb: KnowledgeBase | None = None,
        verifier: AnswerabilityVerifier | None = None,
    ) -> "AgentResources":
        """Open (indexing the bundled KB if needed) the shared KB and load the chat model."""
        from ingest.embed import get_embedder

        settings = settings or get_settings()
        embedder = get_embedder(settings)
        if kb is None:
            from retrieval.indexing import ensure_kb_indexed
            from retrieval.store import KnowledgeIndex

            kb = KnowledgeIndex.open(settings.index_dir, embedder=embedder)
            kb.unit_splitter = KBUnitTexts()  # KB files indexed now get their evidence units too
            ensure_kb_indexed(settings, index=kb)
        if chat_model is None:
            from agent.backends import get_chat_model

            chat_model = get_chat_model(settings)
        return cls(kb, chat_model, embedder=embedder, settings=settings, verifier=verifier)

    def warm_up(self) -> None:
        """Do once, before the first customer, what the first question would otherwise pay for.

        A search loads the embedding model (≈ 8 s of imports) and builds the BM25 index; the
        KB's evidence units are brought up to date (only chunks indexed without them); the
        answer prompt's fixed system policy is evaluated so llama.cpp keeps it in its KV cache
        for every later prompt that starts with it. Measured on 2 cores: the first question took
        13 s, after warming up 1.45 s (the rest 1.3–1.6 s). Nothing is written to the audit log, and a
        failure is only logged: it shows again, audibly, on the first question."""
        try:
            self.evidence.score("warm-up", self.kb.search("warm-up", k=KB_POOL))
            self.units.refresh()
            if self.settings.answer_style == "extractive":
                if self.verifier.uses_judge:
                    judge_probability(self.chat_model, "warm-up", ["warm-up"])
            else:
                messages = build_messages("warm-up", [], fields={}, history=[], bank_name=self.settings.bank_name)
                for _ in self.chat_model.stream(messages, max_tokens=1):
                    pass
        except Exception as exc:  # serving can start; the error will show on the first question
            log.warning("chat model warm-up failed: %s", exc)

    def new_session(self, session_id: str | None = None, pipeline: AnswerPipeline | None = None) -> "ChatSession":
        """A fresh conversation; `pipeline`: another configuration of the answer path (an
        evaluation's ablation), else the shared one."""
        from agent.session import ChatSession

        return ChatSession(self, session_id=session_id, pipeline=pipeline)

    def model_wait(self) -> float:
        """Seconds a use of the chat model would wait now: the served app's queue for it
        (`docteller.protocols.QueuedModel`); 0 where nothing else shares it (the CLI)."""
        model = self.chat_model
        return model.expected_wait() if isinstance(model, QueuedModel) else 0.0

    def model_too_busy(self) -> float | None:
        """`model_wait` when it is longer than `Settings.model_max_wait_s` (a turn then does
        without the model's optional uses), else None."""
        wait = self.model_wait()
        return wait if wait > self.settings.model_max_wait_s else None

    @property
    def lexical_verifier(self) -> AnswerabilityVerifier:
        """The verifier that decides without the chat model (when it is too busy to judge)."""
        if self._lexical_verifier is None:
            self._lexical_verifier = (self.verifier if not self.verifier.uses_judge
                                      else AnswerabilityVerifier.load(self.kb.term_frequencies))
        return self._lexical_verifier

    @property
    def model_label(self) -> str:
        return self.chat_model.model_id

    def contact_answer(self) -> tuple[str, list[Citation]]:
        """The handoff text, with Customer Service's number and hours as the KB states them."""
        if self._contact_cache is None:
            self._contact_cache = contact_from_kb(self.kb)
        return self._contact_cache
