"""Staff view: token-gated bulk indexing of policy documents, document list, search, statistics.

No staff token configured means the view is disabled (it says so), never open. Every handler
re-checks the unlocked flag held server-side in the tab's `gr.State`, so the controls cannot be
driven without the token even by a client that skips the page.
"""

from __future__ import annotations

import hmac
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

from docteller.settings import Settings

from ui.backend import Backend, UploadRejected, check_upload

logger = logging.getLogger(__name__)

MAX_ARCHIVE_MEMBERS = 5000
RESULT_HEADERS = ["file", "status", "reason", "pages", "chunks", "seconds"]
DOCUMENT_HEADERS = ["title", "source", "type", "pages", "chunks", "indexed", "origin", "doc_id"]
SEARCH_HEADERS = ["score", "title", "page", "passage", "chunk_id"]


class ArchiveRejected(Exception):
    """A zip that cannot be unpacked safely; `str()` names the archive and the reason."""


def token_matches(settings: Settings, supplied: str | None) -> bool:
    """Constant-time comparison with the configured staff token; False when none is configured."""
    expected = settings.staff_token
    if not expected or not supplied:
        return False
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


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


def stage_staff_files(files: list[str | Path], workdir: Path, settings: Settings) -> StagedFiles:
    """Copy uploads into `workdir` under their own names, unpacking zips; refuse what can't be read."""
    from ingest.sniff import IngestError, sniff

    paths: list[Path] = []
    rejected: list[list[Any]] = []
    cap = settings.max_upload_mb * 1024 * 1024
    for n, file in enumerate(files):
        src = Path(file)
        name = src.name
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
            paths.extend(sorted(unpacked))
        else:
            target = slot / name
            shutil.copyfile(src, target)
            paths.append(target)
    return StagedFiles(paths=paths, rejected=rejected)


def file_result_row(result: Any, base: Path | None = None) -> list[Any]:
    path = Path(str(result.path))
    shown = path.name
    if base is not None:
        try:
            # "0003/policies/fees.pdf" -> "policies/fees.pdf": the staging slot is not the user's.
            shown = str(PurePosixPath(*path.relative_to(base).parts[1:])) or path.name
        except ValueError:
            pass
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
            [d.title, d.source, d.mime, d.pages, d.chunks, str(indexed)[:19], getattr(d, "origin", "kb"), d.doc_id]
        )
    return rows


def run_indexing(backend: Backend, files: list[str | Path]):
    """Index uploaded files; yields (done, total, rows, summary or None) as each file finishes."""
    workdir = Path(tempfile.mkdtemp(prefix="docteller-staff-"))
    try:
        staged = stage_staff_files(files, workdir, backend.settings)
        rows = list(staged.rejected)
        total = len(staged.paths)
        yield 0, total, rows, None
        if not staged.paths:
            return
        events: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["summary"] = backend.index_files(staged.paths, progress=events.put)
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
            done += 1
            rows.append(file_result_row(item, workdir))
            yield done, total, rows, None
        worker.join()
        if "error" in outcome:
            rows.append(["(indexing)", "failed", str(outcome["error"]), 0, 0, 0.0])
        yield done, total, rows, outcome.get("summary")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(rows: list[list[Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    parts = [f"**{n}** {status}" for status, n in sorted(counts.items())]
    return "Indexed: " + ", ".join(parts) if parts else "Nothing to index."


def build_staff_tab(backend: Backend) -> None:
    """The Staff tab's contents; call inside a `gr.Tab` of the app's Blocks."""
    import gradio as gr

    settings = backend.settings
    if not settings.staff_token:
        gr.Markdown(
            "### Staff view disabled\nNo staff token is configured. Set `DOCTELLER_STAFF_TOKEN` "
            "and restart to enable bulk indexing and document management.",
            elem_id="staff-disabled",
        )
        return

    unlocked = gr.State(False)
    with gr.Row(elem_id="staff-login"):
        token = gr.Textbox(label="Staff token", type="password", scale=4, elem_id="staff-token")
        unlock = gr.Button("Unlock", variant="primary", scale=1, elem_id="staff-unlock")
    login_status = gr.Markdown(elem_id="staff-status")

    with gr.Column(visible=False, elem_id="staff-panel") as panel:
        with gr.Tabs():
            with gr.Tab("Add documents"):
                files = gr.File(
                    label="Policy documents (PDF, DOCX, XLSX, Markdown, HTML, text) or folders as .zip",
                    file_count="multiple",
                    elem_id="staff-files",
                )
                index_btn = gr.Button("Index documents", variant="primary", elem_id="staff-index")
                index_summary = gr.Markdown(elem_id="staff-index-summary")
                results = gr.Dataframe(
                    headers=RESULT_HEADERS, interactive=False, wrap=True, elem_id="staff-results", label="Results"
                )
            with gr.Tab("Documents"):
                refresh = gr.Button("Refresh", elem_id="staff-refresh")
                docs = gr.Dataframe(headers=DOCUMENT_HEADERS, interactive=False, wrap=True, elem_id="staff-docs")
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

    def require(ok: bool) -> None:
        if not ok:
            raise gr.Error("Staff token required: unlock the staff view first.")

    def listing(ok: bool):
        require(ok)
        rows = document_rows(backend)
        choices = [(f"{r[0]} ({r[1]})", r[7]) for r in rows]
        return rows, gr.update(choices=choices, value=None), backend.stats()

    def do_unlock(supplied: str):
        if not token_matches(settings, supplied):
            logger.warning("staff unlock refused")
            return False, "**Wrong staff token.** Access refused.", gr.update(visible=False), [], gr.update(), {}
        rows, pick, st = listing(True)
        return True, "Staff view unlocked.", gr.update(visible=True), rows, pick, st

    def do_index(ok: bool, uploaded: list[str] | None, progress=gr.Progress()):
        require(ok)
        if not uploaded:
            raise gr.Error("Choose some files (or .zip folders) to index first.")
        rows: list[list[Any]] = []
        for done, total, rows, summary in run_indexing(backend, list(uploaded)):
            progress((done, total or 1), desc=f"Indexing {done}/{total}", unit="files")
            text = summarise(rows) if summary is None else summarise(rows) + " — done."
            yield text, rows
        yield summarise(rows) + " — done.", rows

    def do_delete(ok: bool, doc_id: str | None):
        require(ok)
        if not doc_id:
            raise gr.Error("Pick a document to delete.")
        removed = backend.delete_document(doc_id)
        rows, pick, st = listing(ok)
        message = f"Deleted `{doc_id[:12]}`." if removed else f"`{doc_id[:12]}` was not in the index."
        return message, rows, pick, st

    def do_search(ok: bool, text: str):
        require(ok)
        if not text or not text.strip():
            return []
        return [
            [round(h.score, 4), h.chunk.title, h.chunk.page_start, h.chunk.text[:300], h.chunk.id]
            for h in backend.search(text.strip(), k=10)
        ]

    def do_quality(ok: bool) -> str:
        from agent.evaluate import last_report_markdown

        require(ok)
        return last_report_markdown(settings)

    private = {"api_visibility": "private"}
    unlock.click(do_unlock, [token], [unlocked, login_status, panel, docs, to_delete, stats], **private)
    token.submit(do_unlock, [token], [unlocked, login_status, panel, docs, to_delete, stats], **private)
    index_btn.click(do_index, [unlocked, files], [index_summary, results], **private).then(
        listing, [unlocked], [docs, to_delete, stats], **private
    )
    refresh.click(listing, [unlocked], [docs, to_delete, stats], **private)
    stats_btn.click(listing, [unlocked], [docs, to_delete, stats], **private)
    delete_btn.click(do_delete, [unlocked, to_delete], [delete_status, docs, to_delete, stats], **private)
    search_btn.click(do_search, [unlocked, query], [hits], **private)
    quality_btn.click(do_quality, [unlocked], [quality], **private)
    query.submit(do_search, [unlocked, query], [hits], **private)
