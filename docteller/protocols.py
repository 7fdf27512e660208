"""The swappable stages of docteller, as structural protocols.

Each stage has one obvious home and a default implementation:

| protocol      | default                                    | where                    |
|---------------|--------------------------------------------|--------------------------|
| `OcrEngine`   | RapidOCR (ONNX models inside the wheel)    | `ingest/ocr.py`          |
| `Embedder`    | sentence-transformers, packaged MiniLM      | `ingest/embed.py`        |
| `VectorIndex` | FAISS (flat / HNSW, GPU when present)       | `retrieval/vector.py`    |
| `ChatModel`   | llama.cpp GGUF (CPU), transformers VLM, HTTP | `agent/backends/`       |
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from docteller.model import TextLine

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
    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) each of shape (n_queries, k); ids of -1 mean no result."""
        ...

    def __len__(self) -> int: ...


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
class ChoiceScorer(Protocol):
    """Optional capability of a `ChatModel`: how likely its reply starts with each choice.

    One forward pass instead of a generation, and a probability rather than a hard answer, so a
    yes/no judgement can be thresholded and calibrated (see `agent.judge`)."""

    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """{choice: probability}, normalised over `choices` (case and a leading space ignored)."""
        ...
