"""The swappable stages of docteller, as structural protocols.

Each stage has one obvious home and a default implementation:

| protocol        | default                                         | where                     |
|-----------------|-------------------------------------------------|---------------------------|
| `OcrEngine`     | RapidOCR (ONNX models inside the wheel)         | `ingest/ocr.py`           |
| `Embedder`      | sentence-transformers, packaged MiniLM          | `ingest/embed.py`         |
| `VectorIndex`   | FAISS (flat / HNSW; on a GPU when present)      | `retrieval/vector.py`     |
| `VectorIndexFactory` | `FaissVectors`, configured by the settings | `retrieval/vector.py`     |
| `UnitSplitter`  | the agent's sentences and table rows            | `agent/evidence.py`       |
| `KnowledgeBase` | hybrid FAISS + BM25 index over a manifest       | `retrieval/store.py`      |
| `ChatModel`     | llama.cpp GGUF (CPU), transformers VLM, HTTP    | `agent/backends/`         |
| `ChoiceScorer`  | llama.cpp (one forward pass)                    | `agent/backends/llamacpp.py` |

They live here, at the bottom of the layers (`docteller ← ingest ← retrieval ← agent ← ui`), so a
layer can name what it needs from another without importing it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from docteller.model import Chunk, SearchHit, TextLine

# An OCR engine's phrase is the document model's line as read (one type from engine to extractor).
OcrLine = TextLine


@dataclass
class OcrResult:
    lines: list[OcrLine]
    width: int
    height: int
    engine: str
    rotation: int = 0  # degrees the image was rotated (clockwise) before reading
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def mean_confidence(self) -> float:
        if not self.lines:
            return 0.0
        return float(sum(line.confidence for line in self.lines) / len(self.lines))


@runtime_checkable
class OcrEngine(Protocol):
    name: str

    def read(self, image: np.ndarray) -> OcrResult:
        """Read an RGB uint8 image (H, W, 3). Lines come back in reading order."""
        ...


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # recorded in the manifest: one index never mixes two models
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (len(texts), dim)."""
        ...


@runtime_checkable
class VectorIndex(Protocol):
    """Vectors under int64 ids, searched by inner product (the vectors are L2-normalised)."""

    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(
        self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) each of shape (n_queries, k); ids of -1 mean no result.
        `allowed_ids`: search only among these (a filtered search), not all of them."""
        ...

    def ids(self) -> np.ndarray:
        """Every id held, for reconciling with the manifest after a crash."""
        ...

    def save(self, path: Path) -> None:
        """Write the index to `path` atomically (a reader never sees half a file)."""
        ...

    def __len__(self) -> int: ...

    @property
    def kind(self) -> str:
        """What kind of index it is now (e.g. "flat", "hnsw"), for `stats`."""
        ...


class VectorIndexFactory(Protocol):
    """How the store gets its vector indexes (one for chunks, one for evidence units)."""

    def __call__(self, path: Path | None, dim: int) -> VectorIndex:
        """The index saved at `path`; `path=None`: a new, empty one. Raises on an unreadable file."""
        ...


@runtime_checkable
class UnitSplitter(Protocol):
    """Splits a chunk into the units (sentences, table rows) that are embedded on their own."""

    fingerprint: str  # changes whenever the code that splits may split differently

    def __call__(self, chunk: Chunk) -> list[str]:
        """The texts the chunk's units are embedded from, in unit order."""
        ...


@runtime_checkable
class KnowledgeBase(Protocol):
    """What the agent needs from the bank's knowledge base: chunk and unit search, chunk lookup,
    term statistics. The default is `retrieval.store.KnowledgeIndex`."""

    embedder: Embedder  # the one that embedded the KB: questions must be embedded with it too
    generation: int  # changes whenever the indexed chunks change, so derived caches refresh
    unit_splitter: UnitSplitter | None  # with one, each added document's units are embedded

    def search(self, query: str, k: int = 5, filters: dict | None = None) -> list[SearchHit]:
        """The best `k` chunks for `query` (hybrid ranking), each with its cosine similarity."""
        ...

    def search_units(self, query: str, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[SearchHit]:
        """Hits for the chunks of the `k` units most similar to `query`; chunks in `exclude` skipped."""
        ...

    def sync_units(self) -> int:
        """Embed the units of chunks stored without (current) ones; returns how many chunks."""
        ...

    def chunk_units(self, chunk_id: str) -> tuple[str, np.ndarray] | None:
        """(digest of the unit texts, unit vectors) stored for a chunk, if any."""
        ...

    def get_chunk(self, chunk_id: str) -> Chunk | None: ...

    def term_frequencies(self, text: str) -> tuple[dict[str, int], int]:
        """({term: how many chunks hold it} for the terms of `text`, number of chunks)."""
        ...

    def chunks_with_embeddings(self) -> tuple[list[Chunk], np.ndarray]:
        """Every chunk and its embedding (an offline, batched read)."""
        ...


@dataclass
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
    images: list[Any] = field(default_factory=list)  # PIL images for vision models


@runtime_checkable
class ChatModel(Protocol):
    model_id: str  # human-readable id, recorded in the audit log
    model_hash: str  # sha256 of the weights file (or a server-reported id)

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> Iterator[str]:
        """Yield the answer's text pieces as they are generated."""
        ...


@runtime_checkable
class QueuedModel(Protocol):
    """Optional capability of a `ChatModel` shared by many customers (the web app's queue for
    it): how long a use of it would wait now, so an optional use can be skipped under load."""

    def expected_wait(self) -> float:
        """Seconds a use started now would wait for the model (0 when this turn already holds it)."""
        ...


@runtime_checkable
class ChoiceScorer(Protocol):
    """Optional capability of a `ChatModel`: how likely its reply starts with each choice.

    One forward pass instead of a generation, and a probability rather than a hard answer, so a
    yes/no judgement can be thresholded and calibrated (see `agent.judge`)."""

    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """{choice: probability}, normalised over `choices` (case and a leading space ignored)."""
        ...
