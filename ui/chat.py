"""The customer chat: streamed grounded answers, uploads, fields and sources panels, staff tab.

Each browser tab is one session (Gradio's session hash → `TabSession`): its transcript,
uploads and answers live server-side, so two tabs never see each other's documents. The chat
handler is exposed to Gradio's API as `/chat`, so `gradio_client` drives the same code path as
the browser.
"""

from __future__ import annotations

import html
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from docteller.model import BBox, UploadedDocument
from ui import render
from docteller.redact import ValueMasker, masker_for
from ui.backend import (
    Backend,
    SessionLimit,
    Status,
    TabSession,
    UploadRejected,
    citation_dicts,
    kept_copy,
    upload_status,
)
from ui.security import digest, session_id_from_headers
from ui.staff import build_staff_tab

logger = logging.getLogger(__name__)

TITLE = "docteller — your bank's assistant"
INTRO = (
    "Ask about accounts, fees, cards, transfers or our policies, or drop a **passport, ID card or "
    "bank statement** into the box below and ask about it. Every answer cites its sources; "
    "click a source to see the page it came from."
)
CSS = """
#dt-header h1 {margin-bottom: 0}
#dt-header p {margin-top: 4px; color: var(--body-text-color-subdued)}
.dt-caption {font-size: 13px}
.dt-muted {color: var(--body-text-color-subdued); font-size: 12px}
.dt-scroll {overflow-x: auto}
#side-close, .dt-phone-only {display: none !important}
/* Phones: the chat fills the screen; the side panel is a drawer over the bottom of the screen,
   opened when a source or a document is tapped, and closed with its button. */
@media (max-width: 768px) {
  #dt-header p {display: none}
  #chatbot {height: 62vh !important}
  #side-panel {display: none !important}
  #side-panel.dt-open {display: block !important; position: fixed; left: 0; right: 0; bottom: 0;
                       top: 15vh; z-index: 1000; overflow-y: auto; padding: 8px;
                       background: var(--background-fill-primary);
                       box-shadow: 0 -6px 24px rgba(0,0,0,.25); border-radius: 14px 14px 0 0}
  #side-close {display: block !important}
  .dt-phone-only {display: flex !important}
}
"""
PHONE_MAX_WIDTH = 768
# After a turn on a phone: show the answer (not the input box), and open the drawer only when the
# customer taps a source or a document; on a desktop the panel is beside the chat and stays put.
JS_SHOW_ANSWER = """() => { if (window.innerWidth > 768) return;
  const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
  if (bots.length) bots[bots.length - 1].scrollIntoView({block: 'start'}); }"""
JS_OPEN_DRAWER = """() => { if (window.innerWidth <= 768) document.querySelector('#side-panel')?.classList.add('dt-open'); }"""
JS_CLOSE_DRAWER = """() => { document.querySelector('#side-panel')?.classList.remove('dt-open'); }"""
JS_START_AT_TOP = """() => { if (window.innerWidth <= 768) { document.activeElement?.blur(); window.scrollTo(0, 0); } }"""
TAB_CLOSED_GRACE_S = 120.0  # a closed tab's session (and uploads) ends this long after, unless reloaded
UPLOAD_FILE_TYPES = [".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", "image"]


# --- per-tab state kept beside the agent session --------------------------------------------


def _ui_state(session: TabSession) -> dict[str, Any]:
    """UI-only state of a tab (transcript, which answer each message is), kept on the session."""
    state = getattr(session, "ui_state", None)
    if state is None:
        state = {"transcript": [], "answer_at": {}, "last_upload": None, "last_answer": None,
                 "panel_picked": False}
        session.ui_state = state  # type: ignore[attr-defined]
    return state


def _sid(backend: Backend, request: gr.Request | None) -> str:
    """The server-issued session id from the signed cookie (never Gradio's client-chosen hash)."""
    sid = session_id_from_headers(backend.cookies, getattr(request, "headers", None))
    if sid is None:
        raise gr.Error("Your session could not be verified. Please reload the page.")
    return sid


def _session(backend: Backend, request: gr.Request | None) -> TabSession:
    try:
        return backend.web_session(_sid(backend, request))
    except SessionLimit as exc:
        raise gr.Error(str(exc)) from None


def _masker(session: TabSession) -> ValueMasker:
    return masker_for(d.extraction for d in session.uploads.values())


# --- rendering helpers ------------------------------------------------------------------------


def _citation_label(n: int, citation: dict[str, Any]) -> str:
    title = citation.get("title") or Path(str(citation.get("source") or "document")).name
    if citation.get("publisher"):  # another institution's document: whose it is, first
        title = f"{citation['publisher']}: {title}"
    page = citation.get("page")
    return f"[{n}] {title}" + (f", p. {page}" if page else "")


def _answer_markdown(answer: Any, masker: ValueMasker | None = None) -> str:
    text = (answer.answer or "").strip()
    if masker:
        text = masker.text(text)
    citations = citation_dicts(answer)
    if citations:
        listed = "\n".join(f"- {_citation_label(i + 1, c)}" for i, c in enumerate(citations))
        text += f"\n\n**Sources**\n{listed}"
    return text


def _citation_options(answer_index: int, citations: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"value": f"cite:{answer_index}:{i}", "label": "Open " + _citation_label(i + 1, c)}
        for i, c in enumerate(citations)
    ]


def _extraction_summary(doc: UploadedDocument) -> str:
    text = render.extraction_summary(doc.name, doc.extraction)
    text += " The details are under **My documents**, where you can correct any field."
    return masker_for([doc.extraction]).text(text)


def _caption_html(title: str, page: int, path: Path | None, text: str, shown_name: str | None = None) -> str:
    name = shown_name or (Path(str(path)).name if path else "")
    where = f" · {html.escape(name)}" if name else ""
    passage = html.escape(text.strip()[:1500])
    return (
        f"<p><b>{html.escape(title)}</b>, page {page}<span class='dt-muted'>{where}</span></p>"
        f"<blockquote style='white-space:pre-wrap;border-left:3px solid #e6a700;padding-left:8px;"
        f"margin:0;font-size:13px'>{passage}</blockquote>"
    )


def citation_preview(backend: Backend, session: TabSession, citation: dict[str, Any]) -> tuple[Image.Image, str]:
    """The cited page rendered with the passage highlighted, and a caption with the passage."""
    chunk = None
    chunk_id = citation.get("chunk_id")
    text = citation.get("text") or ""
    bbox = None
    page = int(citation.get("page") or 1)
    title = citation.get("title") or "Source"
    path: Path | None = None
    mime: str | None = None

    upload = session.uploads.get(citation.get("doc_id") or "")
    if upload is not None:
        path, mime = upload.path, upload.mime
    if chunk_id:
        # Upload passages live in the session's own index, never in the shared KB.
        store = session.agent.upload_index if citation.get("origin") == "upload" else backend.index
        chunk = store.get_chunk(chunk_id)
    if chunk is not None:
        text = chunk.text or text
        bbox = chunk.bbox
        page = chunk.page_start or page
        title = chunk.title or title
        if path is None:
            path = backend.original_file(chunk.doc_id) or render.resolve_source(chunk.source, backend.settings.kb_dir)
    if path is None and citation.get("source"):
        path = render.resolve_source(str(citation["source"]), backend.settings.kb_dir)
    if path is not None and mime is None:
        from ingest.sniff import IngestError, sniff

        try:
            mime = sniff(path)
        except IngestError:
            mime = None
    boxes = [BBox(**b) if isinstance(b, dict) else b for b in citation.get("boxes") or []]
    if upload is not None and boxes:
        # A computed answer: outline the transaction rows (or field lines) it used.
        image = render.render_cited_rows(*kept_copy(upload), upload.extraction, page, boxes)
        return image, _caption_html(title, page, None, "The lines this answer used are outlined on the page.",
                                    shown_name=upload.name)
    if upload is not None:
        # The customer's own page: fields (or the cited passage) outlined, numbers blanked.
        masker = masker_for([upload.extraction])
        shown = render.field_boxes(upload.extraction, page) if not text else (
            [render.Box(bbox=bbox, outline=render.SELECTED_EDGE, fill=render.SELECTED_FILL, width=3)] if bbox else []
        ) + render.redaction_boxes(upload.extraction, page)
        image = render.render_document_page(*kept_copy(upload), page, shown)
        caption = masker.text(text) if text else "Extracted fields are outlined on the page."
        return image, _caption_html(title, page, None, caption, shown_name=upload.name)
    image = render.render_passage(path, mime, title=title, page=page, text=text or title, bbox=bbox)
    return image, _caption_html(title, page, path, text)


def _doc_choices(session: TabSession) -> list[tuple[str, str]]:
    return [(f"{d.name} ({d.extraction.doc_type})", d.doc_id) for d in session.uploads.values()]


def doc_panel(session: TabSession, doc_id: str | None, selected_field: str | None = None) -> tuple:
    """Outputs of the My documents panel for one upload (or empty)."""
    doc = session.uploads.get(doc_id or "")
    if doc is None:
        empty = "<p class='dt-muted'>Upload a passport, ID card or statement to see what I read from it.</p>"
        return (gr.update(choices=_doc_choices(session), value=None), "", empty, "",
                gr.update(choices=[], value=None), None, "")
    result = doc.extraction
    if selected_field not in result.fields:
        selected_field = None
    field = result.fields.get(selected_field) if selected_field else None
    page = (field.page if field and field.page else None) or next(
        (f.page for f in result.fields.values() if f.page and f.bbox), 1
    )
    try:
        image = session.preview_file(
            render.render_document_page(*kept_copy(doc), page, render.field_boxes(result, page, selected_field))
        )
    except Exception as exc:  # the page preview is a convenience; the tables still show
        logger.warning("could not render %s page %s: %s", doc.name, page, exc)
        image = None
    summary = render.document_heading(doc.name, result)
    field_choices = [(n.replace("_", " "), n) for n in result.fields]
    return (
        gr.update(choices=_doc_choices(session), value=doc.doc_id),
        summary,
        render.fields_html(result),
        render.checks_html(result),
        gr.update(choices=field_choices, value=selected_field),
        image,
        render.transactions_html(result),
    )


def sources_panel(backend: Backend, session: TabSession, answer_index: int | None, citation_index: int = 0) -> tuple:
    """Outputs of the Sources panel: the answer's citations, and the chosen one rendered."""
    answers = session.answers
    if answer_index is None or not (0 <= answer_index < len(answers)) or not answers[answer_index].citations:
        return gr.update(choices=[], value=None), None, "<p class='dt-muted'>Ask a question: the sources of each answer show here.</p>"
    citations = answers[answer_index].citations
    citation_index = min(max(citation_index, 0), len(citations) - 1)
    choices = [(_citation_label(i + 1, c), f"cite:{answer_index}:{i}") for i, c in enumerate(citations)]
    try:
        picture, caption = citation_preview(backend, session, citations[citation_index])
        image = session.preview_file(picture)
    except Exception as exc:
        logger.warning("citation preview failed: %s", exc)
        image, caption = None, "<p>Could not open this source just now; the passage is quoted in the answer.</p>"
    return gr.update(choices=choices, value=f"cite:{answer_index}:{citation_index}"), image, caption


def _sources_and_tab_unchanged() -> tuple:
    """The Sources panel's three outputs and the side panel's tab, left as they are."""
    return (gr.skip(),) * 4


def _parse_cite(value: str | None) -> tuple[int, int] | None:
    try:
        _, a, c = str(value).split(":")
        return int(a), int(c)
    except (ValueError, TypeError):
        return None


# --- the app --------------------------------------------------------------------------------


def _refusal(backend: Backend, session: TabSession, text: str, files: list[str]) -> str | None:
    """Why this turn is refused before any work (too long, too fast), or None."""
    settings = backend.settings
    if len(text) > settings.max_message_chars:
        return (f"That message is too long for me ({len(text):,} characters; the limit is "
                f"{settings.max_message_chars:,}). Please ask in a shorter message.")
    if (text or files) and not backend.rate_limiter.allow(session.key):
        return "You're sending messages faster than I can answer. Please wait a moment and try again."
    return None


def _take_upload(backend: Backend, session: TabSession, sid: str, file: str, transcript: list, state: dict):
    """Read one attached file into the session; Gradio's cached copy is deleted at once. While it
    is read, the bubble says which page ("Reading your statement, page 2 of 3…")."""
    name = Path(file).name
    transcript.append({"role": "user", "content": f"Attached: {file_chip(file)}"})
    transcript.append({"role": "assistant", "content": f"_Reading {name}…_"})
    reading = transcript[-1]
    yield gr.MultimodalTextbox(value=None, interactive=False), transcript
    if not backend.ownership.owns(digest("web", sid), file):
        # Only a file this browser session uploaded itself can be read (not another's path).
        transcript.remove(reading)
        transcript.append({"role": "assistant", "content": f"Sorry, I can't find {name} any more. Please attach it again."})
        yield gr.MultimodalTextbox(value=None, interactive=False), transcript
        return
    try:
        doc = None
        for step in read_upload(session, file, name, backend.settings):
            if isinstance(step, str):
                reading["content"] = step
                yield gr.skip(), transcript
            else:
                doc = step
    except UploadRejected as exc:
        gr.Warning(str(exc))
        transcript.append({"role": "assistant", "content": f"Sorry, I couldn't use that file. {exc}"})
    except Exception:
        logger.exception("upload failed")
        transcript.append({"role": "assistant", "content": f"Sorry, something went wrong reading {name}. Please try again, or talk to a person."})
    else:
        state["last_upload"] = doc.doc_id
        transcript.append({"role": "assistant", "content": _extraction_summary(doc)})
    finally:
        if reading in transcript:
            transcript.remove(reading)
        backend.ownership.release_file(digest("web", sid), file)
    yield gr.MultimodalTextbox(value=None, interactive=False), transcript


def read_upload(session: TabSession, file: str | Path, name: str, settings: Any) -> Iterator[str | UploadedDocument]:
    """Read an upload on a worker thread: yields a status line as each page starts being read,
    then the `UploadedDocument`; raises what `TabSession.add_upload` raises."""
    events: queue.Queue = queue.Queue()

    def progress(kind: str | None, page: int, pages: int) -> None:
        events.put(("status", upload_status(kind, page, pages)))

    def work() -> None:
        try:
            events.put(("done", session.add_upload(file, name, settings, progress=progress)))
        except BaseException as exc:  # handed to the reader, which raises it
            events.put(("error", exc))

    threading.Thread(target=work, name=f"upload-{session.public_id[:8]}", daemon=True).start()
    while True:
        kind, item = events.get()
        if kind == "error":
            raise item
        yield item
        if kind == "done":
            return


def file_chip(path: str | Path) -> str:
    """'passport.png · PNG image · 1.2 MB': what an attached file shows in the conversation."""
    path = Path(path)
    kind = {".pdf": "PDF"}.get(path.suffix.lower(), f"{path.suffix.lstrip('.').upper() or 'file'} image")
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    shown = f"{size / 1048576:.1f} MB" if size >= 1048576 else f"{max(1, round(size / 1024))} KB"
    return f"{path.name} · {kind} · {shown}"


def _answer_turn(session: TabSession, text: str, transcript: list, state: dict):
    """Stream one answer into the transcript; numbers from the customer's uploads are masked.
    Until the first words arrive the bubble says what is happening, so a wait is never blank."""
    if not transcript or transcript[-1].get("content") != text or transcript[-1].get("role") != "user":
        transcript.append({"role": "user", "content": text})
    transcript.append({"role": "assistant", "content": session.working_status})
    reply = transcript[-1]
    masker = _masker(session)
    yield gr.MultimodalTextbox(value=None, interactive=False), transcript
    try:
        streamed = ""
        for event in session.ask_stream(text):
            if isinstance(event, Status):  # waiting for the model: the place in line, until words come
                if not streamed:
                    reply["content"] = event.text
                    yield gr.skip(), transcript
            elif isinstance(event, str):
                streamed += event
                reply["content"] = masker.text(streamed)
                yield gr.skip(), transcript
            else:
                answer_index = len(session.answers) - 1
                reply["content"] = _answer_markdown(event, masker)
                citations = citation_dicts(event)
                if citations:
                    reply["options"] = _citation_options(answer_index, citations)
                state["answer_at"][len(transcript) - 1] = answer_index
                state["last_answer"] = answer_index
    except Exception:
        logger.exception("answering failed")
        reply["content"] = (
            "Sorry, something went wrong while answering. Please try again, or use "
            "**Talk to a person**."
        )


@dataclass
class _ChatControls:
    """The customer tab's components, as `_chat_column` and `_side_panel` lay them out."""

    chatbot: Any = None
    box: Any = None
    new_btn: Any = None
    human_btn: Any = None
    open_sources: Any = None
    open_docs: Any = None
    close_btn: Any = None
    side_tabs: Any = None
    cite_pick: Any = None
    cite_image: Any = None
    cite_text: Any = None
    doc_pick: Any = None
    doc_summary: Any = None
    page_image: Any = None
    fields_view: Any = None
    field_pick: Any = None
    field_value: Any = None
    fix_btn: Any = None
    checks_view: Any = None
    tx_view: Any = None

    @property
    def docs(self) -> list[Any]:
        """The outputs of `doc_panel`, in order."""
        return [self.doc_pick, self.doc_summary, self.fields_view, self.checks_view, self.field_pick,
                self.page_image, self.tx_view]

    @property
    def sources(self) -> list[Any]:
        """The outputs of `sources_panel`, in order."""
        return [self.cite_pick, self.cite_image, self.cite_text]


def build_blocks(backend: Backend) -> gr.Blocks:
    """The whole web UI: customer chat with side panels, and the Staff tab."""
    # Gradio's cache is swept too: nothing a customer uploaded or was shown outlives an hour there,
    # even if its session's own clean-up never ran (per-session deletion is in `Backend`).
    with gr.Blocks(title="docteller", fill_height=False, delete_cache=(300, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="dt-header")
        controls = _ChatControls()
        with gr.Tabs(elem_id="dt-main-tabs"):
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                with gr.Row(equal_height=False):
                    _chat_column(controls)
                    _side_panel(controls)
            with gr.Tab("Staff", id="staff", elem_id="tab-staff"):
                build_staff_tab(backend)
        _wire_chat(demo, controls, _ChatHandlers(backend))
    return demo


def _chat_column(c: _ChatControls) -> None:
    """The conversation, the input box and the buttons under it."""
    with gr.Column(scale=3, min_width=420):
        c.chatbot = gr.Chatbot(
            label="Conversation",
            height=560,
            elem_id="chatbot",
            buttons=["copy"],
            placeholder="Ask me about fees, cards, transfers, or your uploaded documents.",
        )
        c.box = gr.MultimodalTextbox(
            placeholder="Ask a question, or attach your passport, ID card or statement…",
            file_types=UPLOAD_FILE_TYPES,
            file_count="multiple",
            sources=["upload"],
            show_label=False,
            elem_id="chat-input",
            autofocus=True,
        )
        with gr.Row():
            c.new_btn = gr.Button("New conversation", elem_id="new-conversation", size="sm")
            c.human_btn = gr.Button("Talk to a person", elem_id="talk-to-human", size="sm")
        with gr.Row(elem_classes=["dt-phone-only"]):
            c.open_sources = gr.Button("Sources", elem_id="open-sources", size="sm")
            c.open_docs = gr.Button("My documents", elem_id="open-docs", size="sm")


def _side_panel(c: _ChatControls) -> None:
    """Sources and My documents: beside the chat on a desktop, a drawer on a phone."""
    with gr.Column(scale=2, min_width=360, elem_id="side-panel"):
        c.close_btn = gr.Button("Close ✕", size="sm", elem_id="side-close")
        with gr.Tabs(elem_id="side-tabs") as c.side_tabs:
            with gr.Tab("Sources", id="sources", elem_id="tab-sources"):
                c.cite_pick = gr.Radio(label="Sources of the selected answer", choices=[], elem_id="cite-pick")
                c.cite_image = gr.Image(
                    label="Source page", type="pil", interactive=False, elem_id="cite-image",
                    buttons=["fullscreen"], height=520,
                )
                c.cite_text = gr.HTML(elem_id="cite-text", elem_classes=["dt-caption"])
            with gr.Tab("My documents", id="docs", elem_id="tab-docs"):
                c.doc_pick = gr.Dropdown(label="Document", choices=[], elem_id="doc-pick")
                c.doc_summary = gr.Markdown(elem_id="doc-summary")
                c.page_image = gr.Image(
                    label="Page (selected field in red)", type="pil", interactive=False,
                    elem_id="doc-page", buttons=["fullscreen"], height=300,
                )
                c.fields_view = gr.HTML(elem_id="fields-table")
                with gr.Accordion("Correct a field", open=False, elem_id="correct-field"):
                    with gr.Row():
                        c.field_pick = gr.Dropdown(label="Field", choices=[], scale=2, elem_id="field-pick")
                        c.field_value = gr.Textbox(label="Correct value", scale=3, elem_id="field-value")
                    c.fix_btn = gr.Button("Save correction", size="sm", elem_id="save-correction")
                c.checks_view = gr.HTML(elem_id="checks-table")
                c.tx_view = gr.HTML(elem_id="transactions-table")


def _message_parts(message: dict[str, Any] | str | None) -> tuple[str, list[str]]:
    """(question text, attached file paths) of one submitted message, in any shape Gradio sends."""
    if isinstance(message, str):
        message = {"text": message, "files": []}
    message = message or {}
    text = (message.get("text") or "").strip()
    files = [f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else str(f))
             for f in (message.get("files") or [])]
    return text, files


class _ChatHandlers:
    """The customer tab's event handlers. Each finds the browser's session from the signed cookie
    of its request (never from anything the client says)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def respond(self, message: dict[str, Any] | str | None, request: gr.Request):
        """Take the uploads and the question of one turn; stream the grounded answer."""
        backend = self.backend
        sid = _sid(backend, request)
        session = _session(backend, request)
        state = _ui_state(session)
        transcript: list[dict[str, Any]] = state["transcript"]
        text, files = _message_parts(message)
        state["last_upload"], state["last_answer"], state["panel_picked"] = None, None, False
        refusal = _refusal(backend, session, text, files)
        if refusal:
            transcript.append({"role": "assistant", "content": refusal})
            yield gr.MultimodalTextbox(value=None, interactive=True), transcript
            return
        if text:  # the question shows at once, above its attachments, while they are read
            transcript.append({"role": "user", "content": text})
        for file in files:
            yield from _take_upload(backend, session, sid, file, transcript, state)
        if text:
            yield from _answer_turn(session, text, transcript, state)
        # Options only render under the latest answer; older ones keep their text list.
        for msg in transcript[:-1]:
            msg.pop("options", None)
        yield gr.MultimodalTextbox(value=None, interactive=True), transcript

    def after_turn(self, request: gr.Request):
        """Show what the turn produced: the new upload's fields, or the answer's sources.

        It runs after the answer is on screen, so the customer may already have tapped a source or
        a panel: that choice stands (this turn's documents panel is still brought up to date)."""
        session = _session(self.backend, request)
        state = _ui_state(session)
        docs = doc_panel(session, state["last_upload"] or next(reversed(session.uploads), None))
        if state["panel_picked"]:  # no page preview drawn for nothing
            return (*docs, *_sources_and_tab_unchanged())
        sources = sources_panel(self.backend, session, state["last_answer"])
        if state["panel_picked"]:  # picked while the preview was drawn
            return (*docs, *_sources_and_tab_unchanged())
        if state["last_upload"]:
            tab = gr.Tabs(selected="docs")
        elif state["last_answer"] is not None and session.answers[state["last_answer"]].citations:
            tab = gr.Tabs(selected="sources")
        else:
            tab = gr.Tabs()
        return (*docs, *sources, tab)

    def open_option(self, evt: gr.SelectData, request: gr.Request):
        parsed = _parse_cite(evt.value)
        session = _session(self.backend, request)
        _ui_state(session)["panel_picked"] = True
        if parsed is None:
            return (*sources_panel(self.backend, session, None), gr.Tabs(selected="sources"))
        return (*sources_panel(self.backend, session, *parsed), gr.Tabs(selected="sources"))

    def select_message(self, evt: gr.SelectData, request: gr.Request):
        session = _session(self.backend, request)
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        answer_index = _ui_state(session)["answer_at"].get(int(index)) if index is not None else None
        if answer_index is None:
            return _sources_and_tab_unchanged()
        _ui_state(session)["panel_picked"] = True
        return (*sources_panel(self.backend, session, answer_index), gr.Tabs(selected="sources"))

    def pick_citation(self, value: str | None, request: gr.Request):
        parsed = _parse_cite(value)
        if parsed is None:
            return gr.skip(), gr.skip(), gr.skip()
        session = _session(self.backend, request)
        _ui_state(session)["panel_picked"] = True
        return sources_panel(self.backend, session, *parsed)

    def panel_chosen(self, request: gr.Request) -> None:
        """The customer opened a tab of the side panel themselves."""
        _ui_state(_session(self.backend, request))["panel_picked"] = True

    def open_panel(self, tab_id: str):
        """The handler of a phone's "Sources" / "My documents" button: that panel, in the drawer."""
        def open_tab(request: gr.Request):
            self.panel_chosen(request)
            return gr.Tabs(selected=tab_id)
        return open_tab

    def show_doc(self, doc_id: str | None, request: gr.Request):
        return doc_panel(_session(self.backend, request), doc_id)

    def show_field(self, doc_id: str | None, field_name: str | None, request: gr.Request):
        session = _session(self.backend, request)
        doc = session.uploads.get(doc_id or "")
        outputs = doc_panel(session, doc_id, field_name)
        current = ""
        if doc is not None and field_name in doc.extraction.fields:
            current = render.display_value(doc.extraction.fields[field_name])
        return (*outputs, current)

    def save_correction(self, doc_id: str | None, field_name: str | None, value: str, request: gr.Request):
        session = _session(self.backend, request)
        if not doc_id or doc_id not in session.uploads:
            raise gr.Error("Upload a document first, then pick the field to correct.")
        if not field_name:
            raise gr.Error("Pick the field you want to correct.")
        value = (value or "").strip()
        if not value or "*" in value:
            raise gr.Error("Type the correct value in full (masked values can't be saved).")
        session.correct_field(doc_id, field_name, value)
        gr.Info(f"Saved: I'll use your corrected {field_name.replace('_', ' ')} from now on.")
        return (*doc_panel(session, doc_id, field_name), "")

    def new_conversation(self, request: gr.Request):
        session = _session(self.backend, request)
        session.reset()
        state = _ui_state(session)
        state.update(transcript=[], answer_at={}, last_upload=None, last_answer=None, panel_picked=False)
        return ([], gr.MultimodalTextbox(value=None, interactive=True),
                *doc_panel(session, None), *sources_panel(self.backend, session, None))

    def talk_to_human(self, request: gr.Request):
        session = _session(self.backend, request)
        transcript = _ui_state(session)["transcript"]
        request_text = "I'd like to talk to a person."
        transcript.append({"role": "user", "content": request_text})
        try:
            answer = session.handoff(request_text)
        except Exception:
            logger.exception("handoff failed")
            transcript.append({"role": "assistant", "content": "I couldn't log your request just now. "
                               "Please visit a branch or call the number on the back of your card."})
            return transcript
        answer_index = len(session.answers) - 1
        message = {"role": "assistant", "content": _answer_markdown(answer, _masker(session))}
        citations = citation_dicts(answer)
        if citations:
            message["options"] = _citation_options(answer_index, citations)
        for msg in transcript:
            msg.pop("options", None)
        transcript.append(message)
        _ui_state(session)["answer_at"][len(transcript) - 1] = answer_index
        return transcript

    def forget_tab(self, request: gr.Request):
        """The tab closed (or is reloading): stop its answer; end the session soon unless the
        same browser comes back, so a reload keeps the conversation and a close frees it."""
        backend = self.backend
        sid = session_id_from_headers(backend.cookies, getattr(request, "headers", None))
        session = backend.sessions.peek(backend.web_key(sid)) if sid else None
        if session is not None:
            session.expire_after(TAB_CLOSED_GRACE_S)

    def restore(self, request: gr.Request):
        """A reload of the page shows the conversation and documents it had."""
        session = _session(self.backend, request)
        state = _ui_state(session)
        docs = doc_panel(session, state["last_upload"] or next(reversed(session.uploads), None))
        sources = sources_panel(self.backend, session, state["last_answer"])
        tab = gr.Tabs(selected="docs") if session.uploads else gr.Tabs()
        return (state["transcript"], *docs, *sources, tab)


def _wire_chat(demo: gr.Blocks, c: _ChatControls, h: _ChatHandlers) -> None:
    """Connect the customer tab's components to their handlers (named ones are the public API)."""
    private = {"api_visibility": "private"}
    c.box.submit(h.respond, [c.box], [c.box, c.chatbot], api_name="chat", show_progress="minimal").then(
        h.after_turn, None, [*c.docs, *c.sources, c.side_tabs], **private
    ).then(None, js=JS_SHOW_ANSWER)
    c.chatbot.option_select(h.open_option, None, [*c.sources, c.side_tabs], **private).then(None, js=JS_OPEN_DRAWER)
    c.chatbot.select(h.select_message, None, [*c.sources, c.side_tabs], **private)
    c.close_btn.click(None, js=JS_CLOSE_DRAWER)
    c.open_sources.click(h.open_panel("sources"), None, [c.side_tabs], **private).then(None, js=JS_OPEN_DRAWER)
    c.open_docs.click(h.open_panel("docs"), None, [c.side_tabs], **private).then(None, js=JS_OPEN_DRAWER)
    c.side_tabs.select(h.panel_chosen, None, None, **private)
    c.cite_pick.input(h.pick_citation, [c.cite_pick], c.sources, **private)
    c.doc_pick.input(h.show_doc, [c.doc_pick], c.docs, **private)
    c.field_pick.input(h.show_field, [c.doc_pick, c.field_pick], [*c.docs, c.field_value], **private)
    c.fix_btn.click(h.save_correction, [c.doc_pick, c.field_pick, c.field_value], [*c.docs, c.field_value],
                    api_name="correct_field")
    cleared = [c.chatbot, c.box, *c.docs, *c.sources]
    c.new_btn.click(h.new_conversation, None, cleared, api_name="new_conversation")
    # The chatbot's own clear (bin) button means the same as "New conversation".
    c.chatbot.clear(h.new_conversation, None, cleared, **private)
    c.human_btn.click(h.talk_to_human, None, [c.chatbot], api_name="talk_to_human")
    demo.unload(h.forget_tab)
    demo.load(h.restore, None, [c.chatbot, *c.docs, *c.sources, c.side_tabs], **private).then(
        None, js=JS_START_AT_TOP
    )
