"""Dense vector search with FAISS, behind the `VectorIndex` protocol.

The store never names FAISS: it is handed a `VectorIndexFactory` (default `FaissVectors`, built
from the settings) and only calls what `docteller.protocols.VectorIndex` declares.

- Exact inner product (`IndexFlatIP`) while the corpus is small: on normalised vectors that is
  cosine similarity, and exact search over 50k × 384 floats still takes only a few milliseconds.
- HNSW above `settings.hnsw_threshold` vectors, converted automatically as the index grows.
- On a GPU build of faiss with a visible GPU (and `settings.use_gpu`) the flat index is
  searched on the GPU; the CPU index stays the copy that is updated and saved.

Ids are the manifest's row ids (`IndexIDMap2`), so vectors can be removed and the saved file
can be reconciled with the manifest after a crash. An HNSW graph cannot drop a node: a removed
one is relabelled with a negative id (`-id - 2`, -1 meaning "no result"), which every search
excludes and the saved file keeps, so deleting a document never rebuilds the graph; a save
rebuilds it once masked nodes pass `MAX_MASKED_FRACTION`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from docteller.protocols import VectorIndex, VectorIndexFactory
from docteller.settings import Settings

log = logging.getLogger(__name__)

HNSW_M = 32  # graph degree: recall ≥ 0.95 at efSearch 64 on MiniLM-sized vectors
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
# Share of an HNSW graph's nodes that may be deleted-but-masked before a save rebuilds it.
MAX_MASKED_FRACTION = 0.2

__all__ = ["FaissVectorIndex", "FaissVectors", "VectorIndex", "VectorIndexFactory", "gpu_available", "load_reconciled"]


@contextmanager
def _threads_for(n_queries: int) -> Iterator[None]:
    """Search one query on one OpenMP thread.

    Splitting a single query across threads buys little and, on a busy machine, OpenMP's
    spinning barriers cost far more: measured on 2 shared cores at 10k vectors, p95 fell from
    36 ms to 5 ms with one thread. Batches of queries keep all threads.
    """
    import faiss

    if n_queries > 1:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissVectorIndex:
    """`IndexIDMap2` over flat IP (small) or HNSW (large) with optional GPU search."""

    def __init__(self, dim: int, hnsw_threshold: int = 50_000, use_gpu: bool = True, index=None) -> None:
        import faiss

        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.use_gpu = use_gpu
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        # Nodes of an HNSW graph masked by a negative id (see the module's docstring).
        self._masked = int((faiss.vector_to_array(self._index.id_map) < 0).sum()) if index is not None else 0
        self._gpu_index = None
        self._gpu_resources = None

    # -- protocol ----------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "hnsw" if self._is_hnsw() else "flat"

    def __len__(self) -> int:
        return int(self._index.ntotal) - self._masked

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        if len(ids) == 0:
            return
        if not self._is_hnsw() and self._index.ntotal + len(ids) > self.hnsw_threshold:
            self._convert_to_hnsw(extra_ids=ids, extra_vectors=vectors)
        else:
            self._index.add_with_ids(vectors, ids)
        self._gpu_index = None

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self._is_hnsw():
            self._mask(ids)
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_index = None

    def search(self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (n_queries, k); `allowed_ids` restricts results (metadata filters)."""
        import faiss

        query = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        k = max(1, min(k, max(len(self), 1)))
        selector = None
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        if self._masked:
            live = faiss.IDSelectorRange(0, np.iinfo(np.int64).max)  # masked nodes have negative ids
            selector = live if selector is None else faiss.IDSelectorAnd(selector, live)
        with _threads_for(len(query)):
            if self._is_hnsw():
                params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k))
                if selector is not None:
                    params.sel = selector
                return self._index.search(query, k, params=params)
            if selector is not None:
                return self._index.search(query, k, params=faiss.SearchParameters(sel=selector))
            return self._searcher().search(query, k)

    # -- persistence -------------------------------------------------------------------------

    def ids(self) -> np.ndarray:
        """Ids of the live vectors (used to reconcile with the manifest)."""
        import faiss

        all_ids = faiss.vector_to_array(self._index.id_map)
        return all_ids[all_ids >= 0] if self._masked else all_ids

    def save(self, path: Path) -> None:
        """Write to a temp file, fsync, then atomically replace: readers see old or new, never half."""
        import faiss

        if self._masked > MAX_MASKED_FRACTION * max(self._index.ntotal, 1):
            # Rebuilding the graph costs as much as building it: done only once masked nodes are
            # a sizeable share, so deleting one document from a large index saves in linear time.
            self._rebuild_without_removed()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int, hnsw_threshold: int = 50_000, use_gpu: bool = True) -> "FaissVectorIndex":
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path}: vector dimension {index.d} != expected {dim}")
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.IndexIDMap2(faiss.downcast_index(index))
        return cls(dim, hnsw_threshold=hnsw_threshold, use_gpu=use_gpu, index=index)

    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, dim: int, hnsw_threshold: int = 50_000, use_gpu: bool = True
    ) -> "FaissVectorIndex":
        index = cls(dim, hnsw_threshold=hnsw_threshold, use_gpu=use_gpu)
        index.add(ids, vectors)
        return index

    # -- internals ---------------------------------------------------------------------------

    def _is_hnsw(self) -> bool:
        import faiss

        return isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSW)

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        n = self._index.ntotal
        vectors = self._index.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), dtype=np.float32)
        return ids, vectors

    def _new_hnsw(self):
        import faiss

        hnsw = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
        return faiss.IndexIDMap2(hnsw)

    def _convert_to_hnsw(self, extra_ids: np.ndarray, extra_vectors: np.ndarray) -> None:
        ids, vectors = self._all_vectors()
        log.info("vector index passed %d vectors: switching from exact search to HNSW", self.hnsw_threshold)
        index = self._new_hnsw()
        index.add_with_ids(np.vstack([vectors, extra_vectors]), np.concatenate([ids, extra_ids]))
        self._index = index

    def _mask(self, ids: np.ndarray) -> None:
        """Relabel the nodes of `ids` with negative ids: searches skip them, the file keeps them."""
        import faiss

        labels = faiss.vector_to_array(self._index.id_map)
        hit = np.isin(labels, ids) & (labels >= 0)
        if not hit.any():
            return
        labels[hit] = -labels[hit] - 2
        faiss.copy_array_to_vector(labels, self._index.id_map)
        self._index.construct_rev_map()
        self._masked += int(hit.sum())

    def _rebuild_without_removed(self) -> None:
        ids, vectors = self._all_vectors()
        keep = ids >= 0
        self._masked = 0
        index = self._new_hnsw() if len(ids[keep]) > self.hnsw_threshold else None
        if index is None:
            import faiss

            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        index.add_with_ids(vectors[keep], ids[keep])
        self._index = index

    def _searcher(self):
        """The GPU copy of a flat index when faiss-gpu and a GPU are there, else the CPU index."""
        if not self.use_gpu or self._is_hnsw() or not gpu_available():
            return self._index
        if self._gpu_index is None:
            import faiss

            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        return self._gpu_index


@dataclass(frozen=True)
class FaissVectors:
    """The default `VectorIndexFactory`: FAISS indexes, exact below `hnsw_threshold` vectors,
    HNSW above, searched on the GPU when faiss-gpu sees one and `use_gpu` allows it."""

    hnsw_threshold: int = 50_000
    use_gpu: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> "FaissVectors":
        return cls(hnsw_threshold=settings.hnsw_threshold, use_gpu=settings.use_gpu)

    def __call__(self, path: Path | None, dim: int) -> FaissVectorIndex:
        if path is None:
            return FaissVectorIndex(dim, hnsw_threshold=self.hnsw_threshold, use_gpu=self.use_gpu)
        return FaissVectorIndex.load(path, dim, hnsw_threshold=self.hnsw_threshold, use_gpu=self.use_gpu)


def load_reconciled(
    path: Path | None,
    dim: int,
    expected: np.ndarray,
    stored: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    open_index: VectorIndexFactory,
) -> tuple[VectorIndex, bool]:
    """Load a vector file and make it hold exactly the `expected` ids (the manifest's).

    `open_index(path, dim)` reads the file (`open_index(None, dim)`: a new, empty index). Ids
    missing from the file (committed by a process that had not written the file yet: it writes
    after `UNSAVED_CHUNKS_MAX` chunks and on close, or crashed first) are re-added from
    `stored(ids) -> (ids, vectors)`; ids the manifest no longer has are removed (in an HNSW
    graph: masked, as they were before the save). An unreadable file is rebuilt.
    Returns the index and whether vectors had to be re-added (the caller saves it then)."""
    vectors = None
    if path is not None and path.exists():
        try:
            vectors = open_index(path, dim)
        except Exception as exc:  # unreadable cache: rebuild it from the manifest
            log.warning("vector file %s unreadable (%s); rebuilding from the manifest", path, exc)
    if vectors is None:
        vectors = open_index(None, dim)
    missing, _ = reconcile(vectors, expected, stored, label=str(path or "vectors"))
    return vectors, bool(missing)


class IdKeyed(Protocol):
    """What `reconcile` and `apply_changes` keep in step with the manifest: a vector index, or
    the BM25 index (its items are the chunks' search texts)."""

    def ids(self) -> np.ndarray: ...

    def add(self, ids: np.ndarray, items: Any) -> None: ...

    def remove(self, ids: np.ndarray) -> Any: ...


Stored = Callable[[np.ndarray], tuple[np.ndarray, Any]]  # ids -> (the ids found, their items)


def reconcile(index: IdKeyed, expected: np.ndarray, stored: Stored, label: str = "vectors") -> tuple[int, int]:
    """Make `index` hold exactly the `expected` ids: the missing ones are read from
    `stored(ids) -> (ids, items)` and added, the others removed. Returns (added, removed).
    Costs the ids' comparison and the difference: an index opens with it after a crash, and a
    serving process too far behind the manifest's removal log follows with it."""
    present = index.ids()
    missing = np.setdiff1d(expected, present)
    extra = np.setdiff1d(present, expected)
    if len(extra):
        index.remove(extra)
        log.info("%s: %d deleted entries dropped", label, len(extra))
    _add_stored(index, missing, stored)
    if len(missing):
        log.info("%s: %d entries of the manifest added", label, len(missing))
    return len(missing), len(extra)


def apply_changes(
    index: IdKeyed, added: Sequence[int], removed: Sequence[int], stored: Stored, label: str = "vectors"
) -> tuple[int, int]:
    """Take in another process's commits as listed by the manifest (`Manifest.changes_since`):
    drop the `removed` ids, add the `added` ones `index` lacks (read by `stored`). Ids it already
    holds (this process's own writes) and unknown removals are ignored. Returns (ids added,
    ids listed as removed)."""
    if len(removed):
        index.remove(np.asarray(removed, dtype=np.int64))
    new = np.asarray(added, dtype=np.int64)
    if len(new):
        new = new[~np.isin(new, index.ids())]
    _add_stored(index, new, stored)
    if len(new) or len(removed):
        log.info("%s: followed another process: %d added, %d removed", label, len(new), len(removed))
    return len(new), len(removed)


def _add_stored(index: IdKeyed, ids: np.ndarray, stored: Stored) -> None:
    for start in range(0, len(ids), 100_000):  # bounded memory when a large file is rebuilt
        found, items = stored(ids[start : start + 100_000])
        if len(found):
            index.add(found, items)
