"""Staff view: token-gated bulk indexing of policy documents, document list, search, statistics.

No staff token configured means the view is disabled (it says so), never open. Every handler
re-checks the unlocked flag held server-side in the tab's `gr.State`, so the controls cannot be
driven without the token even by a client that skips the page.
"""

from __future__ import annotations

import logging
import queue
import shutil
import stat
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr

from docteller.model import PUBLISHER_MAX_CHARS, clean_publisher
from docteller.settings import Settings

from ui.backend import Backend, StaffActor, UploadRejected, check_upload
from ui.security import digest, safe_suffix, session_id_from_headers, token_equals

logger = logging.getLogger(__name__)

MAX_ARCHIVE_MEMBERS = 5000
RESULT_HEADERS = ["file", "status", "reason", "pages", "chunks", "seconds"]
DOCUMENT_HEADERS = ["title", "publisher", "source", "type", "pages", "chunks", "indexed", "origin", "doc_id"]
OWN_DOCUMENT = "ours"  # the publisher column of the bank's own documents
SEARCH_HEADERS = ["score", "title", "page", "passage", "chunk_id"]


class ArchiveRejected(Exception):
    """A zip that cannot be unpacked safely; `str()` names the archive and the reason."""


def token_matches(settings: Settings, supplied: str | None) -> bool:
    """Exact constant-time comparison with the configured staff token; False when none is set."""
    return token_equals(supplied, settings.staff_token)


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None if it is absolute, escapes upwards or is junk."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(normalised).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        return None
    return PurePosixPath(*parts)


def safe_unpack_zip(archive: Path, dest: Path, max_total_bytes: int, max_members: int = MAX_ARCHIVE_MEMBERS) -> list[Path]:
    """Unpack `archive` under `dest` with no path traversal, no links and a size cap.

    Sizes in the zip directory can lie, so bytes are counted while copying and the unpack stops
    at the cap. Members that would land outside `dest` (absolute names, `..`), symlinks and
    OS metadata are skipped. Nested archives are unpacked one level (as folders of folders).
    """
    dest = dest.resolve()
    written: list[Path] = []
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRejected(f"{archive.name}: not a readable zip archive ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise ArchiveRejected(f"{archive.name}: too many files ({len(members)} > {max_members})")
        for member in members:
            relative = _safe_member_path(member.filename)
            mode = member.external_attr >> 16
            if relative is None or stat.S_ISLNK(mode):
                logger.warning("%s: skipped unsafe member %r", archive.name, member.filename)
                continue
            if member.flag_bits & 0x1:
                raise ArchiveRejected(f"{archive.name}: encrypted archives are not supported")
            target = (dest / relative).resolve()
            if not target.is_relative_to(dest):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    total += len(chunk)
                    if total > max_total_bytes:
                        out.close()
                        target.unlink(missing_ok=True)
                        raise ArchiveRejected(
                            f"{archive.name}: unpacks to more than {max_total_bytes // 1048576} MB (size cap)"
                        )
                    out.write(chunk)
            written.append(target)
    return written


@dataclass
class StagedFiles:
    paths: list[Path]
    rejected: list[list[Any]]  # result-table rows for files refused before indexing
    names: dict[Path, str]  # staged path -> the name staff gave it (a zip member: "folder/file.pdf")


def stage_staff_files(
    files: list[str | Path], workdir: Path, settings: Settings, original_names: dict[str, str] | None = None
) -> StagedFiles:
    """Copy uploads into `workdir` under their own names, unpacking zips; refuse what can't be read."""
    from ingest.sniff import IngestError, sniff

    paths: list[Path] = []
    rejected: list[list[Any]] = []
    names: dict[Path, str] = {}
    cap = settings.max_upload_mb * 1024 * 1024
    for n, file in enumerate(files):
        src = Path(file)
        name = original_names.get(str(file), src.name) if original_names else src.name
        try:
            check_upload(src, name, settings)
            mime = sniff(src)
        except (UploadRejected, IngestError) as exc:
            rejected.append([name, "failed", str(exc), 0, 0, 0.0])
            continue
        slot = workdir / f"{n:04d}"
        slot.mkdir(parents=True)
        if mime == "application/zip":
            try:
                unpacked = safe_unpack_zip(src, slot, max_total_bytes=max(cap * 8, cap))
            except ArchiveRejected as exc:
                rejected.append([name, "failed", str(exc), 0, 0, 0.0])
                continue
            if not unpacked:
                rejected.append([name, "failed", "archive holds no files", 0, 0, 0.0])
            for member in sorted(unpacked):
                paths.append(member)
                names[member] = str(PurePosixPath(*member.relative_to(slot.resolve()).parts))
        else:
            # Our name on disk (plus a plain suffix: text formats are told apart by it); the
            # staff's own name is kept in `names` and becomes the document's source.
            target = slot / ("file" + safe_suffix(name))
            shutil.copyfile(src, target)
            paths.append(target.resolve())
            names[target.resolve()] = name
    return StagedFiles(paths=paths, rejected=rejected, names=names)


def file_result_row(result: Any, names: dict[Path, str] | None = None) -> list[Any]:
    path = Path(str(result.path))
    shown = (names or {}).get(path, path.name)
    return [
        shown,
        str(result.status),
        result.reason or "",
        int(result.pages or 0),
        int(result.chunks or 0),
        round(float(result.seconds or 0.0), 2),
    ]


def document_rows(backend: Backend) -> list[list[Any]]:
    rows = []
    for d in backend.documents():
        indexed = getattr(d, "indexed_at", "")
        rows.append(
            [d.title, getattr(d, "publisher", None) or OWN_DOCUMENT, d.source, d.mime, d.pages, d.chunks,
             str(indexed)[:19], getattr(d, "origin", "kb"), d.doc_id]
        )
    return rows


def _page_count(path: Path) -> int:
    """Pages a file will take to index (progress is counted in pages: one 300-page PDF is not
    one step among many one-page notes)."""
    if path.suffix.lower() == ".pdf":
        try:
            import pymupdf

            with pymupdf.open(path) as doc:
                return max(1, doc.page_count)
        except Exception:  # unreadable: the indexer reports why; it counts as one step here
            return 1
    return 1


def run_indexing(
    backend: Backend,
    files: list[str | Path],
    actor: StaffActor | None = None,
    original_names: dict[str, str] | None = None,
    publisher: str | None = None,
):
    """Index uploaded files; yields (pages done, pages in all, rows, summary or None) as each file
    finishes.

    Each document's source is the name staff gave the file (not where it was staged), so
    uploading a changed `fees.pdf` replaces the old `fees.pdf` in one transaction. `publisher`:
    see `retrieval.indexing.index_paths` ("" the bank's own, None keep what was recorded).
    """
    workdir = Path(tempfile.mkdtemp(prefix="docteller-staff-"))
    try:
        staged = stage_staff_files(files, workdir, backend.settings, original_names)
        rows = list(staged.rejected)
        total = sum(_page_count(p) for p in staged.paths)
        yield 0, total, rows, None
        if not staged.paths:
            return
        events: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["summary"] = backend.index_files(
                    staged.paths, progress=events.put, sources=staged.names, actor=actor, publisher=publisher
                )
            except Exception as exc:  # reported in the table, not a crash of the UI
                logger.exception("bulk indexing failed")
                outcome["error"] = exc
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="staff-index", daemon=True)
        worker.start()
        done = 0
        while True:
            item = events.get()
            if item is None:
                break
            done += max(1, int(item.pages or 0)) if item.status != "failed" else _page_count(Path(item.path))
            rows.append(file_result_row(item, staged.names))
            yield done, total, rows, None
        worker.join()
        if "error" in outcome:
            rows.append(["(indexing)", "failed", "indexing stopped with an internal error; see the server log", 0, 0, 0.0])
        yield done, total, rows, outcome.get("summary")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(rows: list[list[Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    parts = [f"**{n}** {status}" for status, n in sorted(counts.items())]
    return "Indexed: " + ", ".join(parts) if parts else "Nothing to index."


def _client_of(request: Any) -> str:
    client = getattr(getattr(request, "request", None), "client", None) or getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


@dataclass
class _StaffControls:
    """The Staff panel's components, as `_staff_panel` lays them out."""

    panel: Any
    files: Any
    publisher: Any
    index_btn: Any
    index_summary: Any
    results: Any
    refresh: Any
    docs: Any
    to_delete: Any
    delete_btn: Any
    delete_status: Any
    query: Any
    search_btn: Any
    hits: Any
    stats_btn: Any
    stats: Any
    quality_btn: Any
    quality: Any


def build_staff_tab(backend: Backend) -> None:
    """The Staff tab's contents; call inside a `gr.Tab` of the app's Blocks."""
    if not backend.settings.staff_token:
        gr.Markdown(
            "### Staff view disabled\nNo staff token is configured. Set `DOCTELLER_STAFF_TOKEN` "
            "and restart to enable bulk indexing and document management.",
            elem_id="staff-disabled",
        )
        return
    unlocked = gr.State(None)  # the unlocked staff member (`StaffActor`), held server-side
    with gr.Row(elem_id="staff-login"):
        token = gr.Textbox(label="Staff token", type="password", scale=4, elem_id="staff-token")
        unlock = gr.Button("Unlock", variant="primary", scale=1, elem_id="staff-unlock")
    login_status = gr.Markdown(elem_id="staff-status")
    ui = _staff_panel()
    _wire_staff(backend, unlocked, token, unlock, login_status, ui)


def _staff_panel() -> _StaffControls:
    """The panel shown once unlocked: add documents, the document list, search, statistics."""
    with gr.Column(visible=False, elem_id="staff-panel") as panel:
        with gr.Tabs():
            with gr.Tab("Add documents"):
                files = gr.File(
                    label="Policy documents (PDF, DOCX, XLSX, Markdown, HTML, text) or folders as .zip",
                    file_count="multiple",
                    elem_id="staff-files",
                )
                publisher = gr.Textbox(
                    label="Publisher (leave empty for our own documents)", max_length=PUBLISHER_MAX_CHARS,
                    placeholder="e.g. Northwind Bank", elem_id="staff-publisher",
                    info="Another institution's documents are cited by its name, never as our policy.",
                )
                index_btn = gr.Button("Index documents", variant="primary", elem_id="staff-index")
                index_summary = gr.Markdown(elem_id="staff-index-summary")
                results = gr.Dataframe(
                    headers=RESULT_HEADERS, interactive=False, wrap=True, elem_id="staff-results", label="Results",
                    column_widths=["28%", "10%", "32%", "10%", "10%", "10%"],
                )
            with gr.Tab("Documents"):
                refresh = gr.Button("Refresh", elem_id="staff-refresh")
                docs = gr.Dataframe(
                    headers=DOCUMENT_HEADERS, interactive=False, wrap=True, elem_id="staff-docs", max_chars=60,
                    column_widths=["20%", "10%", "16%", "10%", "6%", "6%", "12%", "6%", "14%"],
                )
                with gr.Row():
                    to_delete = gr.Dropdown(label="Document to delete", choices=[], scale=4, elem_id="staff-delete-pick")
                    delete_btn = gr.Button("Delete", variant="stop", scale=1, elem_id="staff-delete")
                delete_status = gr.Markdown()
            with gr.Tab("Search"):
                with gr.Row():
                    query = gr.Textbox(label="Search the knowledge base", scale=4, elem_id="staff-query")
                    search_btn = gr.Button("Search", scale=1)
                hits = gr.Dataframe(headers=SEARCH_HEADERS, interactive=False, wrap=True, elem_id="staff-hits")
            with gr.Tab("Statistics"):
                stats_btn = gr.Button("Refresh statistics")
                stats = gr.JSON(label="Index statistics", elem_id="staff-stats")
            with gr.Tab("Answer quality"):
                quality_btn = gr.Button("Show the last run", elem_id="staff-quality-refresh")
                quality = gr.Markdown(elem_id="staff-quality")
    return _StaffControls(
        panel, files, publisher, index_btn, index_summary, results, refresh, docs, to_delete, delete_btn,
        delete_status, query, search_btn, hits, stats_btn, stats, quality_btn, quality,
    )


def _require(ok: Any) -> StaffActor:
    if not isinstance(ok, StaffActor):
        raise gr.Error("Staff token required: unlock the staff view first.")
    return ok


def _listing(backend: Backend, ok: Any):
    _require(ok)
    rows = document_rows(backend)
    choices = [(f"{r[0]} ({r[2]})", r[8]) for r in rows]
    return rows, gr.update(choices=choices, value=None), backend.stats()


def _unlock(backend: Backend, supplied: str, request: gr.Request):
    """Check the token (throttled after wrong ones); the unlocked actor and the panel's contents."""
    client = _client_of(request)
    refused = (None, gr.update(visible=False), [], gr.update(), {})
    wait = backend.staff_throttle.retry_after(client)
    if wait > 0:
        return refused[0], f"**Too many wrong tokens.** Try again in {int(wait) + 1} s.", *refused[1:]
    if not token_matches(backend.settings, supplied):
        backend.staff_throttle.failed(client)
        backend.audit_staff("staff.unlock_failed", StaffActor(name="unknown", client=client))
        logger.warning("staff unlock refused for %s", client)
        return refused[0], "**Wrong staff token.** Access refused.", *refused[1:]
    backend.staff_throttle.succeeded(client)
    actor = StaffActor.from_token(supplied, client)
    rows, pick, st = _listing(backend, actor)
    return actor, "Staff view unlocked.", gr.update(visible=True), rows, pick, st


def _index_uploads(backend: Backend, ok: Any, uploaded: list[str] | None, publisher: str | None,
                   request: gr.Request, progress: Any):
    """Index the files this page uploaded, streaming the results table (publisher: the box's
    text, "" for the bank's own documents)."""
    actor = _require(ok)
    if not uploaded:
        raise gr.Error("Choose some files (or .zip folders) to index first.")
    sid = session_id_from_headers(backend.cookies, getattr(request, "headers", None))
    owner = digest("web", sid) if sid else None
    if not all(backend.ownership.owns(owner, f) for f in uploaded):
        raise gr.Error("Those files were not uploaded from this page; please choose them again.")
    rows: list[list[Any]] = []
    published_by = clean_publisher(publisher) or ""
    for done, total, rows, summary in run_indexing(backend, list(uploaded), actor=actor, publisher=published_by):
        progress((done, total or 1), desc=f"Indexing: {done} of {total} pages read ({len(rows)} files)", unit="pages")
        text = summarise(rows) if summary is None else summarise(rows) + " — done."
        yield text, rows
    yield summarise(rows) + " — done.", rows


def _delete(backend: Backend, ok: Any, doc_id: str | None):
    actor = _require(ok)
    if not doc_id:
        raise gr.Error("Pick a document to delete.")
    removed = backend.delete_document(doc_id, actor=actor)
    rows, pick, st = _listing(backend, ok)
    message = f"Deleted `{doc_id[:12]}`." if removed else f"`{doc_id[:12]}` was not in the index."
    return message, rows, pick, st


def _search(backend: Backend, ok: Any, text: str):
    _require(ok)
    if not text or not text.strip():
        return []
    return [
        [round(h.score, 4), h.chunk.title, h.chunk.page_start, h.chunk.text[:300], h.chunk.id]
        for h in backend.search(text.strip(), k=10)
    ]


def _wire_staff(backend: Backend, unlocked: Any, token: Any, unlock: Any, login_status: Any, ui: _StaffControls) -> None:
    """Connect the staff controls to their handlers (all private: not part of the public API)."""
    from agent.evaluate import last_report_markdown

    def do_index(ok: Any, uploaded: list[str] | None, publisher: str | None, request: gr.Request,
                 progress=gr.Progress()):
        yield from _index_uploads(backend, ok, uploaded, publisher, request, progress)

    def do_quality(ok: Any) -> str:
        _require(ok)
        return last_report_markdown(backend.settings)

    def do_unlock(supplied: str, request: gr.Request):
        return _unlock(backend, supplied, request)

    private = {"api_visibility": "private"}
    listing = [ui.docs, ui.to_delete, ui.stats]
    unlocked_outputs = [unlocked, login_status, ui.panel, *listing]
    unlock.click(do_unlock, [token], unlocked_outputs, **private)
    token.submit(do_unlock, [token], unlocked_outputs, **private)
    ui.index_btn.click(do_index, [unlocked, ui.files, ui.publisher], [ui.index_summary, ui.results], **private).then(
        lambda ok: _listing(backend, ok), [unlocked], listing, **private
    )
    ui.refresh.click(lambda ok: _listing(backend, ok), [unlocked], listing, **private)
    ui.stats_btn.click(lambda ok: _listing(backend, ok), [unlocked], listing, **private)
    ui.delete_btn.click(lambda ok, d: _delete(backend, ok, d), [unlocked, ui.to_delete],
                        [ui.delete_status, *listing], **private)
    ui.search_btn.click(lambda ok, t: _search(backend, ok, t), [unlocked, ui.query], [ui.hits], **private)
    ui.query.submit(lambda ok, t: _search(backend, ok, t), [unlocked, ui.query], [ui.hits], **private)
    ui.quality_btn.click(do_quality, [unlocked], [ui.quality], **private)
