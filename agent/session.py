"""Chat sessions: one customer's conversation, answered by the answer pipeline.

Shared, loaded once per process (`agent.resources.AgentResources`): the KB index, the embedder,
the chat model (whose backend serialises generation with a lock), the calibrated evidence
threshold, the answerability verifier, the audit log and the answer pipeline. Per browser tab /
CLI chat (`ChatSession`): history, uploaded documents, their extracted fields (and the
customer's corrections) and a session-scoped in-memory index of their passages. Nothing from one
session is visible to another, and uploads never enter the shared KB.

Answering a question (`ChatSession.ask_stream`): the session takes its lock, hands the pipeline
(`agent.pipeline.AnswerPipeline`) a `Turn` — the question and what it may read of the
conversation — and records each answer (`_finish`: history, the person-offer flag, the audit
log) before it is shown. The pipeline's stages, one module and one typed hand-over each:

1. route (`agent.pipeline.route`): empty; a request for a person, or "yes" to the person the
   last answer offered -> handoff with the contact centre's number and hours from the KB; a
   question code computes from the uploaded document's fields (`agent.doc_answers`); else
   grounded, through the stages below;
2. rewrite: a follow-up made a standalone query (a new value put in place in code, else the
   model's rewrite behind a guard);
3. retrieve: the uploads' and the KB's hits, the KB units' own search; weak evidence declined
   before any model call (the calibrated pre-filter);
4. select: the evidence units scored for the query, as numbered passages and quotable lines;
   an amount-vs-limit question's deciding passage;
5. judge: extractive style, the answerability verifier (`agent.verifier`) on the lines;
   generative style, a name no hit mentions declines;
6. compose: the best lines quoted verbatim (extractive, streamed a sentence at a time), the
   amount compared with the limit in code, or the model's draft streamed token by token;
7. check: a generated draft's figures must occur in the passage a sentence cites, its wording
   be supported; what is not is dropped (nothing left: declined);
8. cite: citations from the kept evidence (`[S#]` -> `[title, p. N]`), another institution's
   document named, never "our policy".

`docteller eval answers --ablate STAGE` replaces a stage by a pass-through to measure it.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.audit import AuditEntry, now_iso
from agent.pipeline import AnswerPipeline, Turn
from agent.pipeline.route import offers_person
from agent.pipeline.types import Answer, AnswerEvent
from agent.prompt import masked_field_values
from agent.resources import AgentResources
from docteller.model import Document, ExtractionResult, Field, UploadedDocument
from docteller.redact import mask

if TYPE_CHECKING:  # the store is imported when the first upload makes the session's index
    from retrieval.store import KnowledgeIndex

log = logging.getLogger(__name__)


class ChatSession:
    """One customer's conversation. Not shared between tabs; safe to call from one thread at a time
    (a lock makes concurrent calls on the same session queue rather than interleave)."""

    def __init__(
        self, resources: AgentResources, session_id: str | None = None, pipeline: AnswerPipeline | None = None
    ) -> None:
        self.resources = resources
        self.pipeline = pipeline or resources.pipeline
        self.session_id = session_id or uuid.uuid4().hex
        self.history: list[tuple[str, str]] = []
        self.uploads: dict[str, UploadedDocument] = {}
        self._page_images: dict[str, list[Any]] = {}
        self._upload_index: KnowledgeIndex | None = None  # made on the first upload
        self._last_query: str | None = None  # the last question as searched (follow-ups rewritten)
        self._offered_person = False  # the last answer offered to connect the customer with a person
        self._lock = threading.RLock()

    # -- uploads ---------------------------------------------------------------------------

    @property
    def upload_index(self) -> KnowledgeIndex:
        if self._upload_index is None:
            from retrieval.store import KnowledgeIndex

            self._upload_index = KnowledgeIndex.in_memory(embedder=self.resources.embedder)
        return self._upload_index

    def add_upload(
        self,
        path_or_bytes: str | Path | bytes,
        name: str | None = None,
        progress: Callable[[str | None, int, int], None] | None = None,
    ) -> ExtractionResult:
        """Extract fields and index the document's passages for this session only.

        The upload is read (and OCR'd) once; that one `Document` is extracted from and indexed.
        `progress(kind, page, pages)` hears as each page starts being read (kind None: the
        document's type is not known until it has been read).
        Raises `ingest.sniff.IngestError` (naming the file and the reason) for unreadable input;
        the session is left unchanged in that case."""
        from ingest.extract import extract_document, read_upload
        from ingest.loaders import ensure_text

        with self._lock, tempfile.TemporaryDirectory(prefix="docteller-upload-") as tmp:
            if isinstance(path_or_bytes, (bytes, bytearray)):
                display = name or "upload"
                path = Path(tmp) / Path(display).name
                path.write_bytes(bytes(path_or_bytes))
            else:
                path = Path(path_or_bytes)
                display = name or path.name
            pages_read = progress and (lambda page, pages: progress(None, page, pages))
            document: Document = read_upload(path, name=display, progress=pages_read)
            result = extract_document(document)
            ensure_text(document)  # nothing to quote: refused like any unreadable file
            document = document.model_copy(update={"title": display, "source": display, "origin": "upload"})
            added = self.upload_index.add_document(document)
            self._page_images[result.doc_id] = _page_images(path) if _accepts_images(self.resources.chat_model) else []
            self.uploads[result.doc_id] = UploadedDocument(
                doc_id=result.doc_id, name=display, extraction=result, chunks=added.chunks
            )
            log.info(
                "session %s: uploaded %s (%s, %d fields, %d chunks)",
                self.session_id[:8], display, result.doc_type, len(result.fields), added.chunks,
            )
            return result

    def add_extraction(self, result: ExtractionResult, document: Document | None = None) -> None:
        """Attach an already extracted document (and optionally its parsed pages) to the session."""
        with self._lock:
            chunks = 0
            if document is not None:
                document = document.model_copy(update={"origin": "upload"})
                chunks = self.upload_index.add_document(document).chunks
            self.uploads[result.doc_id] = UploadedDocument(
                doc_id=result.doc_id, name=result.source, extraction=result, chunks=chunks
            )

    def reset(self) -> None:
        """Start over: forget the history and every upload (and its session-scoped passages)."""
        with self._lock:
            self.history.clear()
            self._last_query, self._offered_person = None, False
            self.uploads.clear()
            self._page_images.clear()
            if self._upload_index is not None:
                self._upload_index.close()
                self._upload_index = None

    def remove_upload(self, doc_id: str) -> None:
        with self._lock:
            if doc_id not in self.uploads:
                raise KeyError(f"no uploaded document {doc_id} in this session")
            del self.uploads[doc_id]
            self._page_images.pop(doc_id, None)
            if self._upload_index is not None:
                self._upload_index.delete(doc_id)

    def correct_field(self, doc_id: str, name: str, value: str) -> Field:
        """The customer fixes a misread field; every later answer uses the corrected value, and
        the checks that depend on it (reconciliation, expiry, printed vs MRZ) are judged again."""
        from ingest.extract import recheck

        with self._lock:
            upload = self.uploads.get(doc_id)
            if upload is None:
                raise KeyError(f"no uploaded document {doc_id} in this session")
            old = upload.extraction.fields.get(name)
            corrected = Field(
                name=name,
                value=value,
                confidence=1.0,
                page=old.page if old else None,
                bbox=old.bbox if old else None,
                raw=old.value if old else None,
                source="user",
                sensitive=old.sensitive if old else False,
            )
            upload.extraction.fields[name] = corrected
            recheck(upload.extraction)
            shown = mask(value) if corrected.sensitive else value
            log.info("session %s: %s corrected %s to %s", self.session_id[:8], upload.name, name, shown)
            return corrected

    # -- asking ----------------------------------------------------------------------------

    def ask(self, question: str) -> Answer:
        final: Answer | None = None
        for event in self.ask_stream(question):
            if event.kind == "final":
                final = event.answer
        assert final is not None
        return final

    def request_human(self, question: str = "I'd like to talk to a person.") -> Answer:
        with self._lock:
            return self._finish(self.pipeline.handoff(self._turn(question)))

    def ask_stream(self, question: str) -> Iterator[AnswerEvent]:
        with self._lock:
            yield from self.pipeline.run(self._turn(question.strip()), self._finish)

    def standalone_query(self, question: str) -> str:
        """What `question` is searched as, after this conversation so far (no answer, no history change)."""
        with self._lock:
            return self.pipeline.standalone_query(self._turn(question.strip())).text

    def record_turn(self, question: str, answer: str = "") -> None:
        """Add a turn to the history without answering it (conversation replays, evaluations)."""
        with self._lock:
            self.history.append((question, answer))
            self._last_query = question

    # -- internals -------------------------------------------------------------------------

    def _turn(self, question: str) -> Turn:
        """What the pipeline may read of this conversation for `question` (a snapshot)."""
        below = self.resources.settings.uncertain_below
        return Turn(
            question=question,
            session_id=self.session_id,
            history=tuple(self.history),
            last_query=self._last_query,
            offered_person=self._offered_person,
            uploads=tuple(self.uploads.values()),
            upload_index=self._upload_index if self.uploads and self._upload_index else None,
            fields={u.name: masked_field_values(u.extraction, below) for u in self.uploads.values() if u.extraction.fields},
            images=tuple(img for images in self._page_images.values() for img in images),
        )

    def _finish(self, answer: Answer, retrieved: Sequence[str] = ()) -> Answer:
        """Record the answer before it is shown: history, the person-offer flag, the audit log."""
        self.history.append((answer.question, answer.answer))
        del self.history[:-8]
        self._last_query = answer.standalone_query or answer.question
        self._offered_person = not answer.handoff and offers_person(answer.answer)
        self.resources.audit.write(
            AuditEntry(
                time=now_iso(),
                session_id=self.session_id,
                question=answer.question,
                standalone_query=answer.standalone_query,
                retrieved_chunk_ids=list(retrieved),
                fields_used=answer.fields_used,
                answer=answer.answer,
                abstained=answer.abstained,
                handoff=answer.handoff,
                model_id=self.resources.chat_model.model_id,
                model_sha256=self.resources.chat_model.model_hash,
                citations=[c.model_dump() for c in answer.citations],
                reason=answer.reason,
            )
        )
        return answer


def _accepts_images(chat_model: Any) -> bool:
    return bool(getattr(chat_model, "accepts_images", False))


VLM_PAGE_DPI = 110  # the first pages of an upload as the vision-language model sees them


def _page_images(path: Path, max_pages: int = 2) -> list[Any]:
    """The first pages of an upload as PIL images, for vision-language models."""
    from ingest.sniff import open_image, open_pdf, sniff

    try:
        mime = sniff(path)
        if mime == "application/pdf":
            from ingest.raster import rasterise

            with open_pdf(path) as pdf:
                return [rasterise(page, VLM_PAGE_DPI) for page in list(pdf)[:max_pages]]
        if mime.startswith("image/"):
            return [open_image(path)]
    except Exception as exc:  # images are a bonus for the VLM; the OCR'd fields still go in
        log.warning("could not render %s for the vision model: %s", path.name, exc)
    return []

