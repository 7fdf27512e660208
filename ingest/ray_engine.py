"""`docteller index --engine ray`: the parse/OCR, chunk and embed stages on Ray Data actor pools.

    file paths ─► ParseActor pool (sniff, parse, OCR, chunk, split units)
               ─► EmbedActor pool (chunks and units, batched) ─► driver

Both stages are callable classes run by `Dataset.map_batches`, so each actor loads its OCR or
embedding model once and keeps it. With the index's unit splitter handed down (the agent's
`UnitSplitter`, attached to the index: this layer never imports it), the parse actors also split
each chunk into its evidence units and the embed actors embed those units with the chunks, in
the same model call, so the driver embeds nothing. The driver (the caller of `load_with_ray`,
`retrieval.indexing`) stays the one writer: it receives each document with its chunks, units and
vectors, in file order, and commits it exactly as it commits the in-process engine's (one manifest
transaction for the chunks and their units, same vector files, same crash repair); nothing here
touches the store. A worker process that dies is restarted by Ray and its batch retried
(`max_restarts` / `max_task_retries`); a file whose batch still fails after that is reported
failed, never silently dropped.

Without an address a local Ray is started for the call (one CPU per core, a small object store,
no dashboard, no usage stats) and stopped afterwards; with one, the call joins that cluster,
whose nodes need docteller installed and the files at the same paths (a shared filesystem).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from docteller.model import Chunk, Document
from docteller.protocols import Embedder, UnitSplitter
from docteller.settings import Settings
from ingest.loading import Pending, Prepared
from ingest.sniff import IngestError

# Read by Ray when it starts: no usage reporting from a bank's machines (and no network here).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A local Ray's workers do this command's own work: at Ray's default niceness (15) they got a
# small fraction of the CPU whenever anything else ran on the machine (measured: idle for minutes
# on a busy 2-core host while the in-process engine's workers, at 0, kept going).
os.environ.setdefault("RAY_worker_niceness", "0")

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # documents pass through it one batch at a time
EMBED_BATCH_DOCS = 8  # documents per embedding call: enough texts to fill the model's batches
# A dead actor is restarted and its batch re-sent this many times before the file counts as failed.
MAX_RETRIES = 3
COLUMNS = ("path", "error", "doc", "chunks", "texts", "unit_texts")


def _column(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)  # object, not fixed-width unicode: documents are big
    array[:] = values
    return array


class ParseActor:
    """Sniff, parse (OCR where a page has no text layer), chunk and (with a splitter) split each
    chunk into its evidence units, one file per call."""

    def __init__(
        self,
        settings: Settings,
        origin: str,
        chunk_size: int,
        chunk_overlap: int,
        loader: Callable | None,
        splitter: UnitSplitter | None = None,
    ) -> None:
        from ingest.loaders import load_document

        self.settings, self.origin = settings, origin
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.loader = loader or load_document
        self.splitter = splitter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self._one(str(path)) for path in batch["path"]]
        return {name: _column([row[name] for row in rows]) for name in COLUMNS}

    def _one(self, path: str) -> dict[str, str]:
        from ingest.chunking import chunk_document

        row = {"path": path, "error": "", "doc": "", "chunks": "", "texts": "", "unit_texts": ""}
        try:
            doc = self.loader(path, origin=self.origin, settings=self.settings)
            chunks = chunk_document(doc, self.chunk_size, self.chunk_overlap)
            # The splitter reads a chunk's text and headings, which the driver's commit keeps
            # (it only renames the source and sets the publisher).
            unit_texts = [self.splitter(chunk) for chunk in chunks] if self.splitter is not None else None
        except IngestError as exc:
            row["error"] = exc.reason
            return row
        except Exception as exc:  # same reason text as the in-process engine gives
            log.debug("indexing %s failed", path, exc_info=True)
            row["error"] = f"{type(exc).__name__}: {exc}"
            return row
        row["doc"] = doc.model_dump_json()
        row["chunks"] = json.dumps([c.model_dump(mode="json") for c in chunks])
        row["texts"] = json.dumps([c.embedding_text() for c in chunks])
        if unit_texts is not None:
            row["unit_texts"] = json.dumps(unit_texts)
        return row


class EmbedActor:
    """Embed the chunks and units of a batch of documents in one model call; the model is loaded
    once per actor."""

    def __init__(self, model: str, batch_size: int, threads: int) -> None:
        import torch

        from ingest.embed import SentenceTransformerEmbedder

        torch.set_num_threads(max(1, threads))  # the CPUs Ray reserved for this actor, not the node's
        self.embedder = SentenceTransformerEmbedder(model, batch_size=batch_size)
        self.embedder.model  # load now, before the first batch arrives

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk_texts = [json.loads(t) if t else [] for t in batch["texts"]]
        # Each document's unit texts, all its chunks' units in order (none without a splitter).
        unit_texts = [[u for units in json.loads(t) for u in units] if t else [] for t in batch["unit_texts"]]
        per_doc = chunk_texts + unit_texts
        flat = [text for texts in per_doc for text in texts]
        vectors = self.embedder.embed(flat) if flat else np.zeros((0, self.embedder.dim), np.float32)
        out, start = [], 0
        for texts in per_doc:
            out.append(np.ascontiguousarray(vectors[start : start + len(texts)], dtype=np.float32).tobytes())
            start += len(texts)
        n = len(chunk_texts)
        result = {name: batch[name] for name in COLUMNS if name != "texts"}
        result["vectors"] = _column(out[:n])
        result["unit_vectors"] = _column(out[n:])
        return result


def plan_actors(cpus: float) -> tuple[int, float, int, float]:
    """(parse actors, CPUs each, embed actors, CPUs each) for a cluster with `cpus` CPUs.

    One embedding actor per four CPUs (embedding a chunk costs far less than parsing or OCR-ing
    its page); parsing gets the rest. Below two CPUs both stages share the one CPU.
    """
    if cpus < 2:
        return 1, cpus / 2, 1, cpus / 2
    embed = max(1, int(cpus // 4))
    return max(1, int(cpus) - embed), 1.0, embed, 1.0


@contextmanager
def ray_session(address: str | None, cpus: int | None = None) -> Iterator[float]:
    """Yield the cluster's CPU count; start (and afterwards stop) a local Ray unless one is running."""
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=cpus or os.cpu_count() or 1,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,  # worker output would mix into --json on stdout
                logging_level=logging.WARNING,
            )
        started = True
    try:
        yield float(ray.cluster_resources().get("CPU", 1))
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a wrong address: `ray.init` itself keeps retrying an unreachable one for minutes."""
    if address == "auto":  # the cluster this node belongs to, found by Ray itself
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({exc})") from exc


def _dataset(
    paths: list[str],
    cpus: float,
    settings: Settings,
    chunking: tuple[int, int],
    origin: str,
    loader: Callable | None,
    splitter: UnitSplitter | None,
):
    import ray
    from ray.data import ActorPoolStrategy

    parse_n, parse_cpus, embed_n, embed_cpus = plan_actors(cpus)
    retries = {"max_restarts": MAX_RETRIES, "max_task_retries": MAX_RETRIES}
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for actor restarts yet, only these remote args (which
        # it marks deprecated); its default is to restart and retry forever, which would loop on
        # a file that kills every worker.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            ParseActor,
            batch_size=1,  # one file per call: a slow scan does not hold other files back
            fn_constructor_args=(settings, origin, *chunking, loader, splitter),
            compute=ActorPoolStrategy(min_size=1, max_size=parse_n),
            num_cpus=parse_cpus,
            **retries,
        )
        return ds.map_batches(
            EmbedActor,
            batch_size=EMBED_BATCH_DOCS,
            fn_constructor_args=(settings.embedding_model, settings.embedding_batch_size, round(embed_cpus) or 1),
            compute=ActorPoolStrategy(min_size=1, max_size=embed_n),
            num_cpus=embed_cpus,
            **retries,
        )


def _matrix(data: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32).reshape(-1, dim).copy()


def _prepared(path: Path, row: dict, dim: int) -> Callable[[], tuple[Document, Prepared]]:
    def load() -> tuple[Document, Prepared]:
        if row["error"]:
            raise IngestError(path, row["error"])
        doc = Document.model_validate_json(row["doc"])
        chunks = [Chunk.model_validate(c) for c in json.loads(row["chunks"])]
        prepared = Prepared(chunks, _matrix(row["vectors"], dim))
        if row["unit_texts"]:
            prepared.unit_texts = json.loads(row["unit_texts"])
            prepared.unit_vectors = _matrix(row["unit_vectors"], dim)
        return doc, prepared

    return load


def _lost(path: Path, reason: str) -> Callable[[], tuple[Document, None]]:
    def load() -> tuple[Document, None]:
        raise IngestError(path, reason)

    return load


def load_with_ray(
    to_load: list[tuple[Path, float]],
    embedder: Embedder,
    chunking: tuple[int, int],
    settings: Settings,
    origin: str,
    address: str | None,
    loader: Callable | None = None,
    cpus: int | None = None,
    splitter: UnitSplitter | None = None,
) -> Iterator[Pending]:
    """Yield (path, start time, load) per file in file order, for `retrieval.indexing` to commit.

    `embedder`: the index's (the workers must embed with the same model); `chunking`: the index's
    (chunk size, overlap); `splitter`: the index's unit splitter, if one is attached (it is sent
    to the workers, so it must pickle and its module be importable there)."""
    from ray.data import DataContext

    from ingest.embed import resolve_model

    if not to_load:
        return
    model_id = resolve_model(settings.embedding_model)[0]
    if model_id != embedder.model_id:
        raise ValueError(f"the Ray engine embeds with {model_id}; this index holds {embedder.model_id} vectors")
    by_path = {str(path): (path, t0) for path, t0 in to_load}
    with ray_session(address, cpus) as cluster_cpus:
        context = DataContext.get_current()
        saved = (context.execution_options.preserve_order, context.enable_progress_bars, context.max_errored_blocks)
        # File order, so row ids and ties in search match the in-process engine; the CLI draws
        # its own bar; a batch that fails after its retries is reported per file below.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.max_errored_blocks = -1
        try:
            ds = _dataset(list(by_path), cluster_cpus, settings, chunking, origin, loader, splitter)
            started = time.perf_counter()
            for row in ds.iter_rows():
                path, t0 = by_path.pop(row["path"])
                yield path, t0, _prepared(path, row, embedder.dim)
            log.info("ray pipeline finished in %.1f s", time.perf_counter() - started)
        finally:
            (context.execution_options.preserve_order, context.enable_progress_bars, context.max_errored_blocks) = saved
    for path, t0 in by_path.values():  # their batches failed on every retry
        yield path, t0, _lost(path, f"the Ray workers processing it failed {MAX_RETRIES + 1} times")
