"""`KnowledgeIndex`: the one retrieval API the agent, the web UI and the CLI call.

Hybrid search: dense cosine similarity (FAISS) and BM25 (`retrieval.bm25`), fused by reciprocal rank
(`settings.rrf_k`); then, when the index holds evidence units, the best fused chunks re-ranked by
their best unit (`unit_fusion`), and the best documents' best chunks lifted (`document_fusion`).
Each hit carries the fused score and the chunk's cosine similarity to the
query (`vector_score`), which the agent uses to judge how strong its evidence is.

Persistence (`open`): `<index_dir>/manifest.sqlite` is the source of truth (one transaction per
document) and `<index_dir>/vectors.faiss` a cache written atomically (temp file + `os.replace`)
after batches, not after each document (`UNSAVED_CHUNKS_MAX`). On open, the vector ids are
reconciled with the manifest; vectors not written yet are re-added from the stored embeddings,
so a `kill -9` mid-indexing loses at most the document being written. `in_memory()` gives a
session index (customer uploads) that never touches disk.

Evidence units (the sentences and table rows of every chunk, searched on their own) are kept the
same way, in the same transactions, in `<index_dir>/units.faiss`: see `retrieval.units`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from docteller.model import Chunk, Document, SearchHit
from docteller.protocols import Embedder, UnitSplitter, VectorIndex, VectorIndexFactory
from docteller.settings import Settings, get_settings
from retrieval.bm25 import BM25Index, tokenize
from retrieval.manifest import DocumentRecord, EmbeddingModelMismatch, Manifest
from retrieval.units import UnitIndex
from retrieval.vector import FaissVectors, apply_changes, load_reconciled, reconcile

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.sqlite"
VECTORS_FILE = "vectors.faiss"
FOLLOW_INTERVAL_S = 1.0  # how often a serving process checks for other processes' commits
# The vector files are rewritten whole (FAISS has no append), so a serving process writes them
# once this many chunks changed since the last write, and on close, not after each document:
# a Staff upload into a 100k-chunk KB otherwise rewrote 0.7 GB. What is not written yet is in
# the manifest, and an index opened after a crash re-adds it from there (`load_reconciled`).
UNSAVED_CHUNKS_MAX = 2000

__all__ = ["AddResult", "DocumentRecord", "EmbeddingModelMismatch", "KnowledgeIndex", "reciprocal_rank_fusion"]


class AddResult(BaseModel):
    status: Literal["indexed", "unchanged", "replaced"]
    doc_id: str
    chunks: int
    replaced: list[str] = []  # ids of the earlier versions of this source that were removed


def reciprocal_rank_fusion(rankings: list[np.ndarray], rrf_k: int, k: int) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = Σ 1 / (rrf_k + rank), rank starting at 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking.tolist(), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


# Weight of the third ranking fused with the dense and BM25 ones: the fused chunks re-ranked by
# their best evidence unit (sentence, list item, table row, FAQ answer; `retrieval.units`). A long
# statute section or agreement clause is embedded as a whole, and its one answering sentence is
# diluted by the rest; compared on its own, that sentence ranks its chunk near the top. Chosen on
# dev questions of two KBs (the shared corpus KB's `shared_kb_dev` and `corpus_kb_test`, the
# bundled KB's eval and held-out dev questions) among 0.5-3.0: 1.5-2.0 gave the same hit@5 on all
# four, 1.75 the best MRR.
UNIT_WEIGHT = 1.75
# How many of the fused chunks are re-ranked by their best unit (their unit vectors are read per
# search, so the cost is bounded by this, not by the KB): 50-200 gave the same figures on the dev
# sets above, 30 a lower MRR, 20 a lower hit@5.
UNIT_RERANKED = 50


# Weight of the document ranking in the fusion (`document_fusion`): chosen on dev questions of two
# KBs (the shared corpus KB's dev sets, the bundled KB's eval and held-out dev questions) among
# 0.25-1.0; 0.6-1.0 gave the same hit@5.
DOCUMENT_WEIGHT = 0.75
# Only the best few documents' best chunks are lifted: lifting every document's puts one chunk per
# document first and pushes a relevant document's second section out of the answer's pool.
DOCUMENTS_LIFTED = 3
# Two chunks whose stored embeddings are this close say the same thing in the same words (a FAQ
# export repeats a row under two questions; a page is indexed twice): only the better-ranked one
# is returned, so copies don't fill the places other passages compete for. Sampled on the shared
# corpus KB's FAQ sheet: pairs at ≥ 0.999 are the same text up to case and spacing; at 0.98-0.99
# they are already two products with one answer, the product's name their only difference.
DUPLICATE_COSINE = 0.999


def unit_fusion(fused: list[tuple[int, float]], best_unit: dict[int, float], rrf_k: int,
                weight: float) -> list[tuple[int, float]]:
    """Add a third ranking to the fusion: the fused chunks ranked by their best evidence unit's
    similarity (`best_unit`: chunk row -> score). Chunks whose best units score the same share a
    rank (competition ranking): 2,500 branch notices with one sentence worded alike gain alike,
    and the ranking that tells them apart (BM25's branch code) decides."""
    ranked = sorted(best_unit.values(), reverse=True)
    rank_of: dict[float, int] = {}
    for n, score in enumerate(ranked, start=1):
        rank_of.setdefault(round(score, 6), n)
    return sorted(
        ((row, score + (weight / (rrf_k + rank_of[round(best_unit[row], 6)]) if row in best_unit else 0.0))
         for row, score in fused),
        key=lambda kv: (-kv[1], kv[0]),
    )


def document_fusion(fused: list[tuple[int, float]], doc_of: dict[int, str], rrf_k: int,
                    weight: float = DOCUMENT_WEIGHT, lifted: int = DOCUMENTS_LIFTED) -> list[tuple[int, float]]:
    """Add a third ranking to the fusion: documents, each ranked by its best chunk, that chunk
    standing for it (hierarchical retrieval). One document with many chunks in the customer's
    words (a FAQ sheet of 1,764 rows) otherwise fills every top place, and the best section of a
    statute written in other words ranks 10th-30th although it is its document's best; with the
    document ranking, the best chunk of each of the `lifted` best documents competes for the top
    places. A KB of one document ranks as before."""
    best: dict[str, int] = {}  # document -> the row of its best chunk, documents in rank order
    for row, _ in fused:
        if row in doc_of:
            best.setdefault(doc_of[row], row)
    if len(best) <= 1:
        return fused
    bonus = {row: weight / (rrf_k + rank) for rank, row in enumerate(list(best.values())[:lifted], start=1)}
    return sorted(((row, score + bonus.get(row, 0.0)) for row, score in fused), key=lambda kv: (-kv[1], kv[0]))


def without_copies(fused: list[tuple[int, float]], k: int, stored: dict[int, np.ndarray]) -> list[tuple[int, float]]:
    """The first `k` of `fused` less any row whose stored embedding (`stored`: the candidates'
    vectors) is a copy of a better-ranked one's (`DUPLICATE_COSINE`). Rows without a vector in
    `stored` (past the candidates looked at) are kept unchecked."""
    kept: list[tuple[int, float]] = []
    kept_vectors: list[np.ndarray] = []
    for row, score in fused:
        vector = stored.get(row)
        if vector is not None and kept_vectors and float(np.max(np.stack(kept_vectors) @ vector)) >= DUPLICATE_COSINE:
            continue
        kept.append((row, score))
        if vector is not None:
            kept_vectors.append(vector)
        if len(kept) >= k:
            break
    return kept


class KnowledgeIndex:
    """The default `docteller.protocols.KnowledgeBase`. Its vector indexes (chunks, units) come
    from `vectors` (a `VectorIndexFactory`; default FAISS as the settings configure it)."""

    def __init__(
        self,
        manifest: Manifest,
        embedder: Embedder,
        index_dir: Path | None,
        settings: Settings,
        vectors: VectorIndexFactory | None = None,
    ) -> None:
        self.manifest = manifest
        self.embedder = embedder
        self.index_dir = index_dir
        self.settings = settings
        self._lock = threading.RLock()
        # Built from the manifest on first use, then updated with each change (`_sync_bm25`).
        self._bm25 = BM25Index()
        self._bm25_synced = False
        self._defer_save = 0
        self._vectors_dirty = False
        self._unsaved_chunks = 0
        # Bumped on every change to the indexed chunks, so derived caches know to refresh.
        self.generation = 0
        self._open_vectors = vectors or FaissVectors.from_settings(settings)
        # Taken before the files are read: a commit made while they load is taken in again by the
        # next `_follow_other_writers` (which ignores what is already held).
        self._marks = manifest.marks()
        self._vectors = self._load_vectors()
        self.units = UnitIndex(manifest, embedder, index_dir, self._open_vectors, self._lock)
        if self.units.dirty:  # vectors re-added after a crash: keep the repair
            self.units.save()
        # What other processes committed is followed (see `_follow_other_writers`).
        self._data_version = manifest.data_version()
        self._followed_at = time.monotonic()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def open(
        cls, index_dir: Path | None = None, embedder: Embedder | None = None, vectors: VectorIndexFactory | None = None
    ) -> "KnowledgeIndex":
        """The persistent index (default `settings.index_dir`); created when missing.

        Raises `EmbeddingModelMismatch` if it was built with a different embedding model.
        """
        settings = get_settings()
        index_dir = Path(index_dir or settings.index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        embedder = embedder or _default_embedder(settings)
        manifest = Manifest(index_dir / MANIFEST_FILE)
        try:
            manifest.ensure_model(embedder.model_id, embedder.dim)
        except EmbeddingModelMismatch:
            manifest.close()
            raise
        return cls(manifest, embedder, index_dir, settings, vectors)

    @classmethod
    def in_memory(cls, embedder: Embedder | None = None, vectors: VectorIndexFactory | None = None) -> "KnowledgeIndex":
        """A session-scoped index: nothing is written to disk."""
        settings = get_settings()
        embedder = embedder or _default_embedder(settings)
        manifest = Manifest(None)
        manifest.ensure_model(embedder.model_id, embedder.dim)
        return cls(manifest, embedder, None, settings, vectors)

    def close(self) -> None:
        with self._lock:
            self.save()
            self.manifest.close()

    def __enter__(self) -> "KnowledgeIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    @property
    def unit_splitter(self) -> UnitSplitter | None:
        return self.units.splitter

    @unit_splitter.setter
    def unit_splitter(self, splitter: UnitSplitter | None) -> None:
        """With a splitter, each added document's evidence units are embedded and stored with it."""
        self.units.attach(splitter)

    def add_document(
        self,
        doc: Document,
        prepared: tuple[list[Chunk], np.ndarray] | None = None,
        units: tuple[list[list[str]], np.ndarray] | None = None,
    ) -> AddResult:
        """Index a document. Same content again: "unchanged". Same source, new content: "replaced".

        `prepared`: the document's chunks and their embeddings, computed elsewhere (the Ray engine's
        actors) with this index's chunk settings and embedding model; the commit is the same.
        `units`: with `prepared`, the chunks' evidence units split (by this index's `unit_splitter`)
        and embedded there too: each chunk's unit texts and all their vectors, in order. Without
        them, an attached splitter's units are split and embedded here.
        """
        from ingest.chunking import chunk_document, doc_type_of

        if prepared is not None:
            self._check_prepared(doc, *prepared)
        version = doc.metadata.get("parser_version")
        with self._lock:
            if self.manifest.is_current(doc.id, version):
                return AddResult(status="unchanged", doc_id=doc.id, chunks=self._chunk_count(doc.id))
            # Same source with other content, or this content read by an older parser.
            previous = [d for d in self.manifest.doc_ids_for_source(doc.source) if d != doc.id]
            if self.manifest.has_document(doc.id):
                previous.append(doc.id)
        if prepared is not None:
            chunks, vectors = prepared
        else:
            chunks = chunk_document(doc, self.settings.chunk_size, self.settings.chunk_overlap)
            vectors = self.embedder.embed([c.embedding_text() for c in chunks])  # outside the lock: slow
        if prepared is not None and units is not None:
            unit_sets = self.units.prepared(chunks, *units)
        else:
            unit_sets = self.units.prepare(chunks)  # this document's units only (None: no splitter)
        with self._lock:
            with self.manifest.transaction() as conn:
                if self.manifest.is_current(doc.id, version):  # indexed concurrently meanwhile
                    return AddResult(status="unchanged", doc_id=doc.id, chunks=len(chunks))
                # The old chunks go in the same transaction the new ones arrive in: a failure
                # keeps the old document whole.
                old_units = [self.manifest.unit_rows_of_document(conn, old) for old in previous]
                removed = [self.manifest.delete_document(conn, old) for old in previous]
                row_ids = self.manifest.insert_document(conn, doc, doc_type_of(doc), chunks, vectors)
                written = self.units.write(conn, row_ids, unit_sets) if unit_sets is not None else None
                if written is None:
                    self.units.unchecked = True
            for old_rows in removed:
                self._vectors.remove(old_rows)
            self._vectors.add(row_ids, vectors)
            for stale in old_units:
                self.units.forget(stale)
            if written is not None:
                self.units.apply(*written)
            if self._bm25_synced:
                for old_rows in removed:
                    self._bm25.remove(old_rows)
                self._bm25.add(row_ids, [c.embedding_text() for c in chunks])
            self._changed(len(row_ids) + sum(len(rows) for rows in removed))
        status = "replaced" if previous else "indexed"
        log.info("%s %s (%d chunks)", status, doc.title, len(chunks))
        return AddResult(status=status, doc_id=doc.id, chunks=len(chunks), replaced=previous)

    def delete(self, doc_id: str) -> bool:
        """Remove a document by id or unique id prefix. False if no (unique) match."""
        with self._lock:
            full_id = self.manifest.resolve_doc_id(doc_id)
            if full_id is None:
                return False
            with self.manifest.transaction() as conn:
                unit_rows = self.manifest.unit_rows_of_document(conn, full_id)
                row_ids = self.manifest.delete_document(conn, full_id)  # its units go by cascade
            self._vectors.remove(row_ids)
            self.units.forget(unit_rows)
            if self._bm25_synced:
                self._bm25.remove(row_ids)
            self._changed(len(row_ids))
            return True

    def record_error(self, path: str, reason: str) -> None:
        self.manifest.record_error(path, reason)

    @contextmanager
    def bulk(self) -> Iterator["KnowledgeIndex"]:
        """Write no vector file until the end of a batch (each document is still committed), and
        then only if `UNSAVED_CHUNKS_MAX` chunks changed since the last write (`close` writes the rest)."""
        with self._lock:
            self._defer_save += 1
        try:
            yield self
        finally:
            with self._lock:
                self._defer_save -= 1
                if self._defer_save == 0 and self._unsaved_chunks >= UNSAVED_CHUNKS_MAX:
                    self.save()

    def sync_units(self) -> int:
        """Embed the evidence units the manifest lacks (see `retrieval.units`); returns how many
        chunks were embedded. Only chunks stored without units, or whose unit texts changed."""
        embedded = self.units.sync()
        with self._lock:
            if embedded and not self._defer_save:
                self.save()
        return embedded

    def save(self) -> None:
        """Write the vector files atomically (no-op for in-memory indexes or when nothing changed)."""
        with self._lock:
            if self.index_dir is None:
                return
            self.units.save()
            self._unsaved_chunks = 0
            self.manifest.prune_removed_log()
            if not self._vectors_dirty:
                return
            self._vectors.save(self.index_dir / VECTORS_FILE)
            self._vectors_dirty = False

    # -- reading -----------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        self._follow_other_writers()
        return self.manifest.documents()

    def chunks_with_embeddings(self) -> tuple[list[Chunk], np.ndarray]:
        """Every indexed chunk, in index order, and the matrix of their stored embeddings: for
        offline work over a whole KB (fitting the verifier, comparing two indexes), never the
        serving path. Reads the manifest once, in batches."""
        with self._lock:
            row_ids, matrix = self.manifest.embeddings()
            by_row: dict[int, Chunk] = {}
            rows = row_ids.tolist()
            for start in range(0, len(rows), 500):  # SQLite caps the parameters of one query
                by_row.update(self.manifest.chunks_by_row(rows[start : start + 500]))
        keep = [i for i, row in enumerate(rows) if row in by_row]
        return [by_row[int(rows[i])] for i in keep], matrix[keep]

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        return self.manifest.chunk(chunk_id)

    def search_units(self, query: str, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[SearchHit]:
        """The chunks of the evidence units most similar to `query` on their own, best unit first
        (among its `4 k` best units; chunks in `exclude` skipped). `score` is the unit's cosine
        similarity, `vector_score` its chunk's."""
        if k <= 0:
            return []
        query_vector = self.embedder.embed([query])[0]
        self._follow_other_writers()
        with self._lock:
            if len(self.units) == 0:
                return []
            unit_scores, unit_ids = self.units.search(query_vector, 4 * k)
            owners = self.manifest.unit_owners(unit_ids)
            best: dict[int, float] = {}  # chunk row -> its best unit's score, in rank order
            for unit, score in zip(unit_ids.tolist(), unit_scores.tolist()):
                if unit in owners and owners[unit] not in best:
                    best[owners[unit]] = score
            chunks = self.manifest.chunks_by_row(list(best))
            ids, matrix = self.manifest.embeddings(np.array(list(best), dtype=np.int64))
        cosine = dict(zip(ids.tolist(), (matrix @ query_vector).tolist())) if len(ids) else {}
        hits: list[SearchHit] = []
        for row, score in best.items():
            chunk = chunks.get(row)
            if chunk is None or chunk.id in exclude:
                continue
            hits.append(SearchHit(chunk=chunk, score=float(score), vector_score=cosine.get(row)))
            if len(hits) >= k:
                break
        return hits

    def chunk_units(self, chunk_id: str) -> tuple[str, np.ndarray] | None:
        """(digest of the unit texts, unit vectors in order) stored for a chunk, or None."""
        return self.manifest.chunk_units(chunk_id)

    def search(self, query: str, k: int = 5, filters: dict | None = None) -> list[SearchHit]:
        """Hybrid search, best first. `filters`: {"doc_id": id or prefix, "doc_type": "pdf"|…}."""
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        query_vector = self.embedder.embed([query])[0]
        self._follow_other_writers()
        with self._lock:
            self._sync_bm25()
            allowed = None
            if filters and any(filters.get(key) for key in ("doc_id", "doc_type")):
                allowed = self.manifest.row_ids(filters)
                if len(allowed) == 0:
                    return []
            if len(self._vectors) == 0:
                return []
            depth = max(4 * k, 100)
            v_scores, v_ids = self._vectors.search(query_vector, depth, allowed_ids=allowed)
            keep = v_ids[0] >= 0
            vector_ids, vector_scores = v_ids[0][keep], v_scores[0][keep]
            bm25_ids, _ = self._bm25.search(query, depth, allowed_ids=allowed)
            fused = reciprocal_rank_fusion([vector_ids, bm25_ids], self.settings.rrf_k, 2 * depth)
            if len(self.units):
                reranked = [row for row, _ in fused[: max(UNIT_RERANKED, 2 * k)]]
                best_units = self.units.best_scores(query_vector, reranked)
                fused = unit_fusion(fused, best_units, self.settings.rrf_k, UNIT_WEIGHT)
            doc_of = self.manifest.doc_ids_by_row([row for row, _ in fused])
            fused = document_fusion(fused, doc_of, self.settings.rrf_k)
            stored = self._stored_vectors([row for row, _ in fused[: 2 * k]])  # the candidates looked at
            fused = without_copies(fused, k, stored)
            row_ids = [row for row, _ in fused]
            chunks = self.manifest.chunks_by_row(row_ids)
            cosine = dict(zip(vector_ids.tolist(), vector_scores.tolist()))
            missing = [r for r in row_ids if r not in cosine]
            # BM25-only hits: their cosine similarity comes from the stored embedding, read above
            # for the candidates and here for any row past them.
            stored.update(self._stored_vectors([r for r in missing if r not in stored]))
            cosine.update({r: float(stored[r] @ query_vector) for r in missing if r in stored})
        vector_rank = {r: i for i, r in enumerate(vector_ids.tolist(), start=1)}
        bm25_rank = {r: i for i, r in enumerate(bm25_ids.tolist(), start=1)}
        return [
            SearchHit(
                chunk=chunks[row],
                score=float(score),
                vector_rank=vector_rank.get(row),
                bm25_rank=bm25_rank.get(row),
                vector_score=float(cosine[row]) if row in cosine else None,
            )
            for row, score in fused
            if row in chunks
        ]

    def _stored_vectors(self, rows: list[int]) -> dict[int, np.ndarray]:
        """{row: its stored embedding} for these chunk rows (none read for no rows)."""
        if not rows:
            return {}
        ids, matrix = self.manifest.embeddings(np.array(rows, dtype=np.int64))
        return dict(zip(ids.tolist(), matrix))

    def prepare_search(self) -> None:
        """Build the BM25 index now if it was never built, not on the first question."""
        with self._lock:
            self._sync_bm25()

    def term_frequencies(self, text: str) -> tuple[dict[str, int], int]:
        """({word: how many chunks hold its term} for the words of `text` (`tokenize`), number of
        chunks): how rare a question's words are in this KB, and which it never uses."""
        with self._lock:
            self._sync_bm25()
            return self._bm25.document_frequencies(tokenize(text)), len(self._bm25)

    def stats(self) -> dict:
        docs, chunks = self.manifest.counts()
        size = 0
        if self.index_dir is not None:
            size = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        return {
            "documents": docs,
            "chunks": chunks,
            "embedding_model": self.embedder.model_id,
            "embedding_dim": self.embedder.dim,
            "index_type": self._vectors.kind,
            "vectors": len(self._vectors),
            "units": len(self.units),
            "units_index_type": self.units.kind,
            "bytes_on_disk": size,
            "index_dir": str(self.index_dir) if self.index_dir else None,
        }

    # -- internals ---------------------------------------------------------------------------

    def _check_prepared(self, doc: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Refuse embeddings that cannot belong to these chunks in this index (wrong count or model size)."""
        if vectors.shape != (len(chunks), self.embedder.dim) or vectors.dtype != np.float32:
            raise ValueError(
                f"{doc.source}: {len(chunks)} chunks need a float32 ({len(chunks)}, {self.embedder.dim}) "
                f"embedding matrix, got {vectors.dtype} {vectors.shape}"
            )
        if any(c.doc_id != doc.id for c in chunks):
            raise ValueError(f"{doc.source}: prepared chunks belong to another document")

    def _chunk_count(self, doc_id: str) -> int:
        record = self.manifest.document(doc_id)
        return record.chunks if record else 0

    def _changed(self, chunks: int) -> None:
        self.generation += 1
        self._vectors_dirty = True
        self._unsaved_chunks += chunks
        if not self._defer_save and self._unsaved_chunks >= UNSAVED_CHUNKS_MAX:
            self.save()

    def _follow_other_writers(self) -> None:
        """Take in what another process committed to this index since we last looked.

        Several app processes share one index, and `docteller index` may add documents while they
        serve. SQLite's `data_version` changes only for other connections' commits, so checking it
        (at most every `FOLLOW_INTERVAL_S`) costs one pragma. On a change, the vectors, the units
        and BM25 take the rows the manifest gained since this process last looked (ids above its
        marks) and drop those its removal log lists (`Manifest.changes_since`), read from the
        manifest, not the writer's files, which it writes only now and then: this process
        answers from the same documents as the writer at the cost of the change, not the KB."""
        if self.index_dir is None or time.monotonic() - self._followed_at < FOLLOW_INTERVAL_S:
            return
        with self._lock:
            self._followed_at = time.monotonic()
            version = self.manifest.data_version()
            if version == self._data_version:
                return
            self._data_version = version
            changes = self.manifest.changes_since(self._marks)
            if changes is None:  # so far behind that the removal log was pruned: compare every id
                self._marks = self.manifest.marks()
                stored = self.manifest.row_ids()
                added, removed = reconcile(self._vectors, stored, self.manifest.embeddings)
                if self._bm25_synced:
                    reconcile(self._bm25, stored, self.manifest.search_texts, label="BM25")
            else:
                self._marks = changes.marks
                chunk_changes = (changes.added_chunks, changes.removed_chunks)
                added, removed = apply_changes(self._vectors, *chunk_changes, self.manifest.embeddings)
                if self._bm25_synced:
                    apply_changes(self._bm25, *chunk_changes, self.manifest.search_texts, label="BM25")
            self.units.follow(changes)
            self.generation += 1
        log.info("index changed by another process: %d chunks added, %d removed", added, removed)

    def _sync_bm25(self) -> None:
        """Build the BM25 index from the manifest the first time (caller holds the lock); from
        then on it is updated with each change (`add_document`, `delete`, `_follow_other_writers`)."""
        if self._bm25_synced:
            return
        started = time.perf_counter()
        self._bm25.build(*self.manifest.search_texts())
        self._bm25_synced = True
        log.debug("BM25 built over %d chunks in %.2fs", len(self._bm25), time.perf_counter() - started)

    def _load_vectors(self) -> VectorIndex:
        """Load the vector file and make it agree with the manifest (writing the repair)."""
        path = self.index_dir / VECTORS_FILE if self.index_dir else None
        vectors, repaired = load_reconciled(
            path, self.embedder.dim, self.manifest.row_ids(), self.manifest.embeddings, self._open_vectors
        )
        if repaired and path is not None:
            vectors.save(path)
        return vectors


def _default_embedder(settings: Settings) -> Embedder:
    from ingest.embed import get_embedder

    return get_embedder(settings)
