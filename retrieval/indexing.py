"""Bulk indexing: load files (`ingest.loading`, in worker processes), embed and store them in this one.

Loading is CPU-bound Python/C (PyMuPDF, RapidOCR) and parallelises across processes; embedding
runs in the main process where the model is loaded once (torch already uses every core there).
With `engine="ray"` (`ingest.ray_engine`) loading, chunking and embedding (of the chunks and, with
the index's unit splitter handed down, of their evidence units) run on Ray Data actor pools
instead, local or on a cluster; committing stays here, in the one writer, either way.
This is the writer side of ingestion, so it lives with the store it writes into.
Unchanged files are recognised by content hash before they are even parsed. A bad file is
reported with its path and the reason, recorded in the manifest's error table, and skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from docteller.model import Document, clean_publisher, sha256_file
from docteller.processes import index_write_lock
from docteller.settings import Settings, get_settings
from ingest.loading import Loaded, Pending, iter_files, load_locally
from ingest.sniff import IngestError
from retrieval.store import KnowledgeIndex

log = logging.getLogger(__name__)

FileStatus = Literal["indexed", "unchanged", "replaced", "failed"]
SAVE_EVERY_S = 60.0  # during a bulk index, the vector files are saved at most this often
Engine = Literal["process", "ray"]

__all__ = ["FileResult", "IndexSummary", "ensure_kb_indexed", "index_paths"]


class FileResult(BaseModel):
    path: str
    status: FileStatus
    reason: str | None = None
    doc_id: str | None = None
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0


class IndexSummary(BaseModel):
    files: list[FileResult] = []
    seconds: float = 0.0

    def count(self, status: FileStatus) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def pages(self) -> int:
        return sum(f.pages for f in self.files)

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files)

    def totals(self) -> dict:
        return {
            "files": len(self.files),
            "indexed": self.count("indexed"),
            "replaced": self.count("replaced"),
            "unchanged": self.count("unchanged"),
            "failed": self.count("failed"),
            "pages": self.pages,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 2),
        }

    def as_json(self) -> dict:
        return {"totals": self.totals(), "files": [f.model_dump() for f in self.files]}


def index_paths(
    paths: list[Path],
    settings: Settings | None = None,
    strict: bool = False,
    progress: Callable[[FileResult], None] | None = None,
    index: KnowledgeIndex | None = None,
    origin: str = "kb",
    engine: Engine = "process",
    ray_address: str | None = None,
    loader: Callable[..., Document] | None = None,
    sources: dict[Path, str] | None = None,
    lock_wait_s: float | None = None,
    publisher: str | None = None,
) -> IndexSummary:
    """Index files and folders into `index` (default: the persistent index). Never raises for a bad file.

    `engine`: "process" loads in a local process pool and embeds here; "ray" runs the parse, OCR,
    chunk and embed stages (the evidence units' too, with `index.unit_splitter`) on Ray Data
    (`ray_address`: a cluster; none: a local Ray for this call). Either way this process is the
    one writer, committing each document atomically.
    `loader(path, origin=, settings=)` reads one file (default `ingest.loaders.load_document`); it
    runs in the workers, so it must pickle (the process pool needs a module-level function).
    `strict` only changes the logging level of failures here; the CLI turns failures into a
    non-zero exit status with --strict. `sources` names a file's document by what the user
    called it (a staff upload's original name) instead of where it sits on disk, so a changed
    upload of the same name replaces its old version. Only one indexing run writes to a home at
    a time: another waits for it (`lock_wait_s`: at most that long, then `IndexBusy`).
    `publisher`: these files are another institution's documents, published by it (answers cite
    them by its name); "" marks them the bank's own; None keeps what an earlier run of the same
    source (or content) recorded, and a new source is then the bank's own.
    """
    settings = settings or get_settings()
    with index_write_lock(settings, lock_wait_s):
        return _index_paths(
            paths, settings, strict, progress, index, origin, engine, ray_address, loader, sources or {}, publisher
        )


def _index_paths(
    paths: list[Path],
    settings: Settings,
    strict: bool,
    progress: Callable[[FileResult], None] | None,
    index: KnowledgeIndex | None,
    origin: str,
    engine: Engine,
    ray_address: str | None,
    loader: Callable[..., Document] | None,
    sources: dict[Path, str],
    publisher: str | None = None,
) -> IndexSummary:
    started = time.perf_counter()
    own_index = index is None
    index = index or KnowledgeIndex.open(settings.index_dir)
    summary = IndexSummary()
    report = _reporter(summary, index, strict, progress)
    try:
        to_load = _changed_files(iter_files(paths), index, report, publisher)
        with index.bulk():
            loaded = _load(to_load, index, settings, origin, engine, ray_address, loader)
            _commit_all(index, loaded, report, sources, publisher)
    finally:
        summary.seconds = time.perf_counter() - started
        if own_index:
            index.close()
    return summary


def _reporter(
    summary: IndexSummary, index: KnowledgeIndex, strict: bool, progress: Callable[[FileResult], None] | None
) -> Callable[[FileResult], None]:
    """Each file's result goes into the summary, a failure also into the log and the manifest."""

    def report(result: FileResult) -> None:
        summary.files.append(result)
        if result.status == "failed":
            (log.error if strict else log.warning)("skipped %s: %s", result.path, result.reason)
            index.record_error(result.path, result.reason or "")
        if progress is not None:
            progress(result)

    return report


def _load(
    to_load: list[tuple[Path, float]],
    index: KnowledgeIndex,
    settings: Settings,
    origin: str,
    engine: Engine,
    ray_address: str | None,
    loader: Callable[..., Document] | None,
) -> Iterator[Pending]:
    """The chosen engine's loaded documents, in file order."""
    if engine == "ray":
        from ingest.ray_engine import load_with_ray

        chunking = (index.settings.chunk_size, index.settings.chunk_overlap)
        return load_with_ray(
            to_load, index.embedder, chunking, settings, origin, ray_address, loader, splitter=index.unit_splitter
        )
    return load_locally(to_load, settings, origin, loader)


def _commit_all(
    index: KnowledgeIndex,
    loaded: Iterator[Pending],
    report: Callable[[FileResult], None],
    sources: dict[Path, str],
    publisher: str | None,
) -> None:
    last_save = time.monotonic()
    for path, t0, load in loaded:
        _store(index, path, t0, load, report, sources.get(path), publisher)
        if time.monotonic() - last_save > SAVE_EVERY_S:
            # Bound the vector repair work after a crash. By time, not by count: each
            # save writes whole FAISS files, so saving every n documents is quadratic.
            index.save()
            last_save = time.monotonic()


def _changed_files(
    files: list[Path], index: KnowledgeIndex, report: Callable[[FileResult], None], publisher: str | None = None
) -> list[tuple[Path, float]]:
    """The files to (re)load; unreadable and unchanged ones (by content hash) are reported here
    (an unchanged one given a publisher has it recorded: no need to read it again)."""
    from ingest.loaders import PARSER_VERSION

    to_load: list[tuple[Path, float]] = []
    for path in files:
        t0 = time.perf_counter()
        try:
            digest = sha256_file(path)
        except OSError as exc:
            report(FileResult(path=str(path), status="failed", reason=f"cannot read file ({exc.strerror or exc})"))
            continue
        if index.manifest.is_current(digest, PARSER_VERSION):
            if publisher is not None:
                index.manifest.set_publisher(digest, publisher)
            record = index.manifest.document(digest)
            report(
                FileResult(
                    path=str(path),
                    status="unchanged",
                    doc_id=digest,
                    pages=record.pages if record else 0,
                    chunks=record.chunks if record else 0,
                    seconds=time.perf_counter() - t0,
                )
            )
            continue
        to_load.append((path, t0))
    return to_load


def _store(
    index: KnowledgeIndex, path: Path, t0: float, load: Callable[[], Loaded], report: Callable[[FileResult], None],
    source: str | None = None, publisher: str | None = None,
) -> None:
    """Commit one loaded document (one manifest transaction) and report it; a failure skips the file.
    `source`: the name the user gave the file (a staff upload), recorded instead of its path.
    `publisher`: as `index_paths` takes it (None: keep the one recorded for this source)."""
    try:
        doc, engine_made = load()
        update: dict = {"source": source or doc.source}
        if publisher is None:  # a new version of a third-party document is still theirs
            publisher = index.manifest.publisher_for_source(update["source"])
            if publisher is None and index.manifest.has_document(doc.id):  # same content, re-read
                publisher = (index.manifest.document(doc.id) or doc).publisher
        update["publisher"] = clean_publisher(publisher)
        doc = doc.model_copy(update=update)
        prepared = units = None
        if engine_made is not None:  # chunked and embedded by the engine, units too where it had the splitter
            named = {"source": doc.source, "publisher": doc.publisher}
            prepared = ([c.model_copy(update=named) for c in engine_made.chunks], engine_made.vectors)
            if engine_made.unit_texts is not None and engine_made.unit_vectors is not None:
                units = (engine_made.unit_texts, engine_made.unit_vectors)
        added = index.add_document(doc, prepared=prepared, units=units)
    except IngestError as exc:
        report(FileResult(path=str(path), status="failed", reason=exc.reason, seconds=time.perf_counter() - t0))
        return
    except Exception as exc:  # a crashed worker or an unexpected parser error: skip the file
        log.debug("indexing %s failed", path, exc_info=True)
        reason = f"{type(exc).__name__}: {exc}"
        report(FileResult(path=str(path), status="failed", reason=reason, seconds=time.perf_counter() - t0))
        return
    report(
        FileResult(
            path=str(path),
            status=added.status,
            doc_id=added.doc_id,
            pages=doc.page_count,
            chunks=added.chunks,
            seconds=time.perf_counter() - t0,
        )
    )


def ensure_kb_indexed(settings: Settings | None = None, index: KnowledgeIndex | None = None) -> IndexSummary:
    """Index the bundled bank knowledge base (`settings.kb_dir`) if it is new or has changed.

    Unchanged files cost one hash each, so calling this on every start of the web app is cheap.
    KB files that were removed from the folder are removed from the index.
    """
    settings = settings or get_settings()
    kb_dir = Path(settings.kb_dir)
    if not kb_dir.is_dir():
        log.warning("knowledge base folder %s not found; nothing to index", kb_dir)
        return IndexSummary()
    own_index = index is None
    index = index or KnowledgeIndex.open(settings.index_dir)
    try:
        summary = index_paths([kb_dir], settings=settings, index=index)
        present = {str(p) for p in iter_files([kb_dir])}
        root = str(kb_dir)
        with index_write_lock(settings):
            for record in index.documents():
                if record.origin == "kb" and record.source.startswith(root) and record.source not in present:
                    log.info("removing %s from the index: no longer in %s", record.source, kb_dir)
                    index.delete(record.doc_id)
        return summary
    finally:
        if own_index:
            index.close()
