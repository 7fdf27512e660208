"""Sparse BM25 retrieval with bm25s, the exact-term half of hybrid search.

Dense embeddings miss exact tokens that matter in banking (fee amounts, "RTP", "1693f", short
codes); BM25 catches them. bm25s indexes 100k passages in about a second, so the index is simply
rebuilt from the manifest whenever documents change instead of being updated in place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from docteller.parsing.text import INDEX_STOPWORDS, plural_stem


_TOKEN = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
def tokenize(text: str) -> list[str]:
    return [plural_stem(t) for t in _TOKEN.findall(text.lower()) if t not in INDEX_STOPWORDS]


class BM25Index:
    """BM25 over passages identified by external int64 ids (the manifest's chunk row ids)."""

    def __init__(self) -> None:
        self._retriever = None
        self._ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def build(self, ids: np.ndarray, texts: Sequence[str]) -> None:
        import bm25s

        # bm25s sets its own logger to DEBUG on import and logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        self._ids = np.asarray(ids, dtype=np.int64)
        if len(self._ids) == 0:
            self._retriever = None
            return
        corpus_tokens = [tokenize(t) or ["\u2205"] for t in texts]  # bm25s needs a token per passage
        retriever = bm25s.BM25()
        retriever.index(corpus_tokens, show_progress=False)
        self._retriever = retriever

    def document_frequencies(self, tokens: Sequence[str]) -> dict[str, int]:
        """How many passages hold each (already tokenised) term; 0 for terms no passage holds."""
        if self._retriever is None:
            return {t: 0 for t in tokens}
        vocab = self._retriever.vocab_dict
        indptr = self._retriever.scores["indptr"]  # bm25s keeps one column of passages per term
        return {t: int(indptr[vocab[t] + 1] - indptr[vocab[t]]) if t in vocab else 0 for t in tokens}

    def search(self, query: str, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) best first, only passages with a positive score; at most k."""
        if self._retriever is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        vocab = self._retriever.vocab_dict
        tokens = [t for t in tokenize(query) if t in vocab]
        if not tokens:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._retriever.get_scores(tokens)
        if allowed_ids is not None:
            scores = np.where(np.isin(self._ids, allowed_ids), scores, 0.0)
        positive = int(np.count_nonzero(scores > 0))
        k = min(k, positive)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self._ids[top], scores[top].astype(np.float32)
