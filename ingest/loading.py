"""Loading files in bulk: walk paths, parse (and OCR) each file in a local process pool.

Loading is CPU-bound Python/C (PyMuPDF, RapidOCR) and parallelises across processes. This module
only produces documents, in file order, as deferred results (`Pending`); what is done with them
(chunked, embedded and written into the knowledge index) is `retrieval.indexing`'s business.
`ingest.ray_engine` is the other engine: it yields the same `Pending` triples from Ray Data.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docteller.model import Chunk, Document
from docteller.processes import end_with_parent
from docteller.settings import Settings
from ingest.sniff import IngestError


@dataclass
class Prepared:
    """A document's chunks and their vectors, computed by the engine (the Ray engine's actors);
    with the index's unit splitter handed down, also each chunk's unit texts and their vectors
    (all the chunks' units, in order, one matrix)."""

    chunks: list[Chunk]
    vectors: np.ndarray
    unit_texts: list[list[str]] | None = None
    unit_vectors: np.ndarray | None = None


# A loaded document and, when the engine already chunked and embedded it, its `Prepared`.
Loaded = tuple[Document, Prepared | None]
# (path, start time, a call that returns the loaded document or raises), yielded in commit order.
Pending = tuple[Path, float, Callable[[], Loaded]]


def iter_files(paths: Iterable[Path]) -> list[Path]:
    """Files under the given paths in a stable order; hidden files and folders are skipped."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in rel.parts):
                    found.append(child)
        else:
            found.append(path)  # a missing file is reported by the loader, not silently dropped
    # Absolute paths: a document's source identifies it across runs ("replaced" detection).
    found = [f.resolve() if f.exists() else f.absolute() for f in found]
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _load_in_worker(
    path: str, origin: str, settings: Settings, loader: Callable[..., Document] | None = None
) -> Document | str:
    """Runs in a worker process (settings are passed along: workers do not share the caller's).

    A failure comes back as its reason string: `IngestError(path, reason)` does not survive
    pickling (exceptions are rebuilt from `args` alone), which would break the whole pool.
    """
    from ingest.loaders import load_document

    try:
        return (loader or load_document)(path, origin=origin, settings=settings)
    except IngestError as exc:
        return exc.reason


def _worker_result(path: Path, future: Future) -> Callable[[], Loaded]:
    def result() -> Loaded:
        value = future.result()
        if isinstance(value, str):
            raise IngestError(path, value)
        return value, None

    return result


def load_locally(
    to_load: list[tuple[Path, float]], settings: Settings, origin: str, loader: Callable[..., Document] | None
) -> Iterator[Pending]:
    """Documents loaded here (one worker) or in a spawned process pool, in file order.

    `loader(path, origin=, settings=)` reads one file (default `ingest.loaders.load_document`); it
    runs in the workers, so it must pickle (the process pool needs a module-level function)."""
    from ingest.loaders import load_document

    loader = loader or load_document
    workers = max(1, min(settings.workers, len(to_load)))
    if workers <= 1:
        for path, t0 in to_load:
            yield path, t0, lambda p=path: (loader(p, origin=origin, settings=settings), None)
        return
    # spawn, not fork: the parent may hold torch/onnxruntime thread pools that do not survive fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=end_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = [(path, t0, pool.submit(_load_in_worker, str(path), origin, settings, loader)) for path, t0 in to_load]
        for path, t0, future in futures:
            yield path, t0, _worker_result(path, future)
