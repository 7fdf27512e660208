"""Evidence units: every sentence and table row of the KB, searched on its own beside the chunks.

A chunk is retrieved by its similarity as a whole, so a fee table of twelve rows ranks low for
the one row that answers. The agent also compares the question with each unit of the KB
(`agent.evidence.KnowledgeUnits`); the unit vectors are kept here the way the chunks' are:

- `manifest.sqlite` (tables `unit_sets`, `units`) is the source of truth. A document's units are
  written in the transaction that writes its chunks, and deleted with them (ON DELETE CASCADE).
- `units.faiss` is a cache of their vectors in a `VectorIndex` (by default FAISS: exact search
  below `settings.hnsw_threshold` vectors, HNSW above), written atomically and reconciled with
  the manifest on open.

What a unit is (which sentences, how a table row is worded) is the agent's business: it hands
the index a `UnitSplitter`. With one attached, adding a document embeds that document's units
only, unless the engine already embedded them (the Ray engine's actors split and embed each
document's units beside its chunks; the driver stores them as they come). Chunks stored without
units (by a process that had no splitter) are embedded by the next `sync`, and only they. The
splitter's `fingerprint` names the code that splits: when it changes, every chunk's unit texts
are compared with the digest of the stored ones and only the chunks whose texts changed are
embedded again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docteller.model import Chunk
from docteller.protocols import Embedder, UnitSplitter, VectorIndexFactory
from retrieval.manifest import Changes, Manifest
from retrieval.vector import apply_changes, load_reconciled, reconcile

log = logging.getLogger(__name__)

UNITS_FILE = "units.faiss"
LEGACY_FILE = "evidence-units.npz"  # the brute-force matrix this index replaced
FINGERPRINT_KEY = "units_splitter"  # manifest meta: the splitter every stored set was checked with
SYNC_BATCH = 256  # chunks read, split and embedded per transaction by `sync`


def units_digest(texts: Sequence[str]) -> str:
    """Identifies the texts a chunk's unit vectors were embedded from."""
    return hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()


@dataclass
class UnitSet:
    """One chunk's unit vectors, ready to store."""

    digest: str
    vectors: np.ndarray


class UnitIndex:
    """The unit vectors of a `KnowledgeIndex`; it calls in under its own lock (`lock`)."""

    def __init__(
        self,
        manifest: Manifest,
        embedder: Embedder,
        index_dir: Path | None,
        open_index: VectorIndexFactory,
        lock: threading.RLock,
    ) -> None:
        self.manifest = manifest
        self.embedder = embedder
        self.splitter: UnitSplitter | None = None
        self.path = index_dir / UNITS_FILE if index_dir is not None else None
        self._lock = lock
        # Chunks may be stored without units (the manifest as opened, another process's commits,
        # a document added with no splitter): `sync` looks for them only then, so the first
        # question after a Staff upload does not scan every chunk.
        self.unchecked = True
        self._vectors, self.dirty = load_reconciled(
            self.path,
            embedder.dim,
            manifest.unit_row_ids(),
            manifest.unit_embeddings,
            open_index,
        )

    def attach(self, splitter: UnitSplitter | None) -> None:
        """Split with `splitter` from now on. On an index with no units yet, every set will be
        this splitter's: recorded now, so `sync` never has to check them against it."""
        self.splitter = splitter
        if splitter is not None and self.manifest.meta(FINGERPRINT_KEY) is None and not self.manifest.has_unit_sets():
            self.manifest.set_meta(FINGERPRINT_KEY, splitter.fingerprint)

    @property
    def kind(self) -> str:
        return self._vectors.kind

    def __len__(self) -> int:
        return len(self._vectors)

    # -- writing (the caller holds the lock and, for `write`, the manifest transaction) ---------

    def prepare(self, chunks: Sequence[Chunk]) -> list[UnitSet] | None:
        """Split and embed the chunks' units (slow: call outside the lock); None without a splitter."""
        splitter = self.splitter
        if splitter is None:
            return None
        texts = [splitter(chunk) for chunk in chunks]
        return self._embed(texts)

    def prepared(
        self, chunks: Sequence[Chunk], texts: Sequence[list[str]], vectors: np.ndarray
    ) -> list[UnitSet] | None:
        """The sets of units split and embedded elsewhere (the Ray engine's actors, with this
        index's splitter): each chunk's unit `texts` and all their `vectors`, in order. None
        without a splitter, as `prepare`; a count or shape that does not fit raises ValueError."""
        if self.splitter is None:
            return None
        if len(texts) != len(chunks):
            raise ValueError(f"unit texts for {len(texts)} chunks, not {len(chunks)}")
        expected = (sum(len(t) for t in texts), self.embedder.dim)
        if vectors.shape != expected or vectors.dtype != np.float32:
            raise ValueError(f"the units need a float32 {expected} matrix, got {vectors.dtype} {vectors.shape}")
        return _cut(texts, vectors)

    def write(self, conn, chunk_rows: Sequence[int], sets: Sequence[UnitSet]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Store each chunk's set in `conn`'s transaction: (replaced unit ids, new ids, their vectors)."""
        removed, added, vectors = [], [], []
        for row, unit_set in zip(chunk_rows, sets):
            old, new = self.manifest.replace_units(conn, int(row), unit_set.digest, unit_set.vectors)
            removed.append(old)
            added.append(new)
            if len(new):
                vectors.append(unit_set.vectors)
        matrix = np.vstack(vectors) if vectors else np.zeros((0, self.embedder.dim), dtype=np.float32)
        return _concat(removed), _concat(added), matrix

    def apply(self, removed: np.ndarray, added: np.ndarray, vectors: np.ndarray) -> None:
        """Bring the FAISS index in step with a committed `write`."""
        if len(removed):
            self._vectors.remove(removed)
        if len(added):
            self._vectors.add(added, vectors)
        if len(removed) or len(added):
            self.dirty = True

    def forget(self, removed: np.ndarray) -> None:
        """Drop the vectors of units deleted from the manifest (their chunks' document went)."""
        self.apply(removed, np.zeros(0, dtype=np.int64), np.zeros((0, self.embedder.dim), dtype=np.float32))

    def follow(self, changes: Changes | None = None) -> None:
        """Take in the units another process committed or deleted: those `changes` lists, or
        (None) whatever differs from the manifest's ids."""
        if changes is None:
            reconcile(self._vectors, self.manifest.unit_row_ids(), self.manifest.unit_embeddings, label="units")
        else:
            apply_changes(self._vectors, changes.added_units, changes.removed_units, self.manifest.unit_embeddings,
                          label="units")
        self.unchecked = True

    def save(self) -> None:
        if self.path is not None and self.dirty:
            self._vectors.save(self.path)
            self.dirty = False

    # -- reading -----------------------------------------------------------------------------

    def ids(self) -> np.ndarray:
        """Unit row ids of the live vectors (to check them against the manifest)."""
        return self._vectors.ids()

    def search(self, query_vector: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(unit scores, unit row ids) of the `depth` units most similar to the query, best first."""
        scores, ids = self._vectors.search(query_vector, depth)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def best_scores(self, query_vector: np.ndarray, chunk_rows: Sequence[int]) -> dict[int, float]:
        """{chunk row: its best unit's cosine similarity to the query} for the given chunks that
        have units: their stored vectors, read by chunk (indexed), so the cost grows with the
        number of chunks asked about, not with the KB."""
        owners, matrix = self.manifest.unit_embeddings_of_chunks(np.asarray(chunk_rows))
        if not len(owners):
            return {}
        scores = matrix @ query_vector
        best: dict[int, float] = {}
        for owner, score in zip(owners.tolist(), scores.tolist()):
            if score > best.get(owner, -np.inf):
                best[owner] = score
        return best

    # -- catching up ---------------------------------------------------------------------------

    def sync(self) -> int:
        """Embed the units of chunks stored without them, or (new splitter code) whose unit texts
        changed. Returns how many chunks were embedded. The slow work runs outside the lock."""
        splitter = self.splitter
        if splitter is None:
            return 0
        check_all = self.manifest.meta(FINGERPRINT_KEY) != splitter.fingerprint
        if not check_all and not self.unchecked:
            return 0
        self.unchecked = False  # a chunk stored without units from now on sets it again
        rows = self.manifest.row_ids() if check_all else self.manifest.chunk_rows_without_units()
        if check_all and len(rows):
            log.info("checking the evidence units of %d chunks against the current splitting", len(rows))
        embedded = 0
        for start in range(0, len(rows), SYNC_BATCH):
            embedded += self._sync_batch(splitter, rows[start : start + SYNC_BATCH])
        if check_all:
            self.manifest.set_meta(FINGERPRINT_KEY, splitter.fingerprint)
        if self.path is not None and (self.path.parent / LEGACY_FILE).exists():
            (self.path.parent / LEGACY_FILE).unlink(missing_ok=True)
            log.info("removed %s: evidence units now live in %s", LEGACY_FILE, UNITS_FILE)
        return embedded

    def _sync_batch(self, splitter: UnitSplitter, rows: np.ndarray) -> int:
        chunks = self.manifest.chunks_by_row(rows.tolist())
        stored = self.manifest.unit_digests(rows)
        todo: list[tuple[int, list[str]]] = []
        for row in rows.tolist():
            if row in chunks:
                texts = splitter(chunks[row])
                if stored.get(row) != units_digest(texts):
                    todo.append((row, texts))
        if not todo:
            return 0
        sets = self._embed([texts for _, texts in todo])
        with self._lock:
            with self.manifest.transaction() as conn:
                live = self.manifest.live_chunk_rows(conn, [row for row, _ in todo])  # deleted meanwhile?
                kept = [(row, unit_set) for (row, _), unit_set in zip(todo, sets) if row in live]
                written = self.write(conn, [row for row, _ in kept], [s for _, s in kept])
            self.apply(*written)
        return len(kept)

    def _embed(self, texts: Sequence[list[str]]) -> list[UnitSet]:
        """One batch for all the chunks' texts (far faster than chunk by chunk), cut back per chunk."""
        return _cut(texts, self.embedder.embed([t for chunk_texts in texts for t in chunk_texts]))


def _cut(texts: Sequence[list[str]], vectors: np.ndarray) -> list[UnitSet]:
    """Each chunk's set from its unit texts and the rows of `vectors` they were embedded into."""
    sets, start = [], 0
    for chunk_texts in texts:
        sets.append(UnitSet(units_digest(chunk_texts), vectors[start : start + len(chunk_texts)]))
        start += len(chunk_texts)
    return sets


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)
