"""Sparse BM25 retrieval, the exact-term half of hybrid search, updated in place.

Dense embeddings miss exact tokens that matter in banking (fee amounts, "RTP", "1693f", short
codes); BM25 catches them.

The index keeps raw term frequencies, not precomputed scores, in immutable segments (one sparse
passage × term matrix each, as Lucene does): adding a document writes a small segment, deleting
one marks its rows dead, and the statistics BM25 needs (document frequency, passage count, mean
length) are read at query time over the live rows. So a staff upload into a 100k-chunk KB costs
the new document's tokens, not a rebuild over every chunk; small segments are merged once there
are more than `MAX_SEGMENTS`, and a segment is compacted when most of its rows are dead.
Scores are Lucene BM25 (k1 1.5, b 0.75: the bm25s defaults this index replaced; a test checks
the same scores).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.sparse
import Stemmer  # PyStemmer: Snowball stemmers in C (bm25s's stemmer)

from docteller.parsing.text import INDEX_STOPWORDS, plural_stem, with_closed_compounds

K1 = 1.5
B = 0.75
MAX_SEGMENTS = 8
COMPACT_DEAD_SHARE = 0.5

_TOKEN = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_NO_IDS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)


def tokenize(text: str) -> list[str]:
    return [plural_stem(t) for t in _TOKEN.findall(with_closed_compounds(text.lower())) if t not in INDEX_STOPWORDS]


# Snowball's English stemmer, as Lucene's EnglishAnalyzer and bm25s stem: a customer's word form
# meets the policy's ("acknowledge" / "acknowledgment", "disputed" / "dispute", "insured" /
# "insurance"). PyStemmer's stemmer objects are not thread-safe (the app serves from threads).
_STEMMER = Stemmer.Stemmer("english")
_STEMMER_LOCK = threading.Lock()


@lru_cache(maxsize=1 << 18)  # a KB has far fewer distinct words
def index_term(token: str) -> str:
    """The term a `tokenize` token is indexed and searched under: its stem; figures as written."""
    if token[0].isdigit():
        return token
    with _STEMMER_LOCK:
        return _STEMMER.stemWord(token)


def index_terms(text: str) -> list[str]:
    """The BM25 terms of `text`: its tokens, stemmed."""
    return [index_term(t) for t in tokenize(text)]


@dataclass
class _Segment:
    """Passages added together: their ids, token counts, which are still live, and a
    passage × term matrix of term frequencies (CSC: one column of postings per term)."""

    ids: np.ndarray
    lengths: np.ndarray
    vocab: dict[str, int]
    tf: scipy.sparse.csc_matrix
    alive: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.alive = np.ones(len(self.ids), dtype=bool)

    @classmethod
    def of(cls, ids: np.ndarray, token_lists: Sequence[Sequence[str]]) -> "_Segment":
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for row, tokens in enumerate(token_lists):
            for token in tokens:
                cols.append(vocab.setdefault(token, len(vocab)))
            rows.extend([row] * len(tokens))
        # Repeated (row, term) entries are summed into the term's frequency in the passage.
        tf = scipy.sparse.csc_matrix(
            (np.ones(len(rows), dtype=np.float32), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
            shape=(len(token_lists), len(vocab)),
            dtype=np.float32,
        )
        tf.sum_duplicates()
        lengths = np.array([len(t) for t in token_lists], dtype=np.float32)
        return cls(np.asarray(ids, dtype=np.int64), lengths, vocab, tf)

    @property
    def live(self) -> int:
        return int(np.count_nonzero(self.alive))

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, term frequencies) of the live passages holding `term`."""
        col = self.vocab.get(term)
        if col is None:
            return np.zeros(0, dtype=np.int32), _NO_SCORES
        start, end = self.tf.indptr[col], self.tf.indptr[col + 1]
        rows, freqs = self.tf.indices[start:end], self.tf.data[start:end]
        keep = self.alive[rows]
        return rows[keep], freqs[keep]

    def triples(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(live rows' ids, vocabulary in column order, live (row, column, tf) entries) for a merge."""
        coo = self.tf.tocoo()
        keep = self.alive[coo.row]
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        return coo.row[keep], terms, coo.col[keep], coo.data[keep]


def _merged(segments: Sequence[_Segment]) -> _Segment:
    """One segment holding the live rows of `segments`, in their order (no re-tokenising)."""
    vocab: dict[str, int] = {}
    ids, lengths, rows, cols, data = [], [], [], [], []
    offset = 0
    for seg in segments:
        live_rows = np.flatnonzero(seg.alive)
        new_row = np.full(len(seg.ids), -1, dtype=np.int64)
        new_row[live_rows] = np.arange(offset, offset + len(live_rows))
        seg_rows, terms, seg_cols, seg_data = seg.triples()
        new_col = np.array([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int64)
        rows.append(new_row[seg_rows])
        cols.append(new_col[seg_cols])
        data.append(seg_data)
        ids.append(seg.ids[live_rows])
        lengths.append(seg.lengths[live_rows])
        offset += len(live_rows)
    tf = scipy.sparse.csc_matrix(
        (np.concatenate(data) if data else _NO_SCORES,
         (np.concatenate(rows) if rows else _NO_IDS, np.concatenate(cols) if cols else _NO_IDS)),
        shape=(offset, len(vocab)),
        dtype=np.float32,
    )
    return _Segment(np.concatenate(ids) if ids else _NO_IDS, np.concatenate(lengths) if lengths else _NO_SCORES, vocab, tf)


class BM25Index:
    """BM25 over passages identified by external int64 ids (the manifest's chunk row ids)."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._live = 0
        self._total_length = 0.0

    def __len__(self) -> int:
        return self._live

    @property
    def segments(self) -> int:
        return len(self._segments)

    def ids(self) -> np.ndarray:
        """The live passages' ids."""
        parts = [seg.ids[seg.alive] for seg in self._segments]
        return np.concatenate(parts) if parts else _NO_IDS

    def build(self, ids: np.ndarray, texts: Sequence[str]) -> None:
        """Replace the whole index with these passages."""
        self._segments, self._live, self._total_length = [], 0, 0.0
        self.add(ids, texts)

    def add(self, ids: np.ndarray, texts: Sequence[str]) -> None:
        """Index new passages (ids not already live: remove a passage before re-adding it)."""
        if len(ids) == 0:
            return
        segment = _Segment.of(ids, [index_terms(t) for t in texts])
        self._segments.append(segment)
        self._live += len(segment.ids)
        self._total_length += float(segment.lengths.sum())
        if len(self._segments) > MAX_SEGMENTS:
            # Merge every segment but the largest: uploads arrive one small segment each, so
            # this touches the recent additions, not the bulk of the KB.
            largest = max(range(len(self._segments)), key=lambda i: len(self._segments[i].ids))
            rest = [s for i, s in enumerate(self._segments) if i != largest]
            self._segments = [self._segments[largest], _merged(rest)]

    def remove(self, ids: np.ndarray) -> int:
        """Forget these passages (unknown ids are ignored); returns how many were live."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        removed = 0
        for i, seg in enumerate(self._segments):
            hit = np.isin(seg.ids, ids) & seg.alive
            count = int(np.count_nonzero(hit))
            if not count:
                continue
            seg.alive[hit] = False
            removed += count
            self._total_length -= float(seg.lengths[hit].sum())
            if seg.live <= len(seg.ids) * (1 - COMPACT_DEAD_SHARE):
                self._segments[i] = _merged([seg])
        self._segments = [s for s in self._segments if len(s.ids)]
        self._live -= removed
        return removed

    def document_frequencies(self, tokens: Sequence[str]) -> dict[str, int]:
        """How many live passages hold each `tokenize` token's term (its stem: "borrowing" is a
        word the KB uses when it writes "borrow"); 0 for terms none holds."""
        return {t: sum(len(seg.postings(index_term(t))[0]) for seg in self._segments) for t in tokens}

    def search(self, query: str, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) best first, only passages with a positive score; at most k."""
        if self._live == 0 or k <= 0:
            return _NO_IDS, _NO_SCORES
        tokens = index_terms(query)  # a repeated query word counts again, as in bm25s
        postings = {t: [seg.postings(t) for seg in self._segments] for t in set(tokens)}
        avg_length = self._total_length / self._live if self._total_length > 0 else 1.0
        found_ids, found_scores = [], []
        for s, seg in enumerate(self._segments):
            scores = None
            for token in tokens:
                rows, freqs = postings[token][s]
                if not len(rows):
                    continue
                df = sum(len(p[0]) for p in postings[token])
                idf = math.log(1 + (self._live - df + 0.5) / (df + 0.5))
                norm = K1 * ((1 - B) + B * seg.lengths[rows] / avg_length)
                if scores is None:
                    scores = np.zeros(len(seg.ids), dtype=np.float32)
                scores[rows] += (idf * freqs / (norm + freqs)).astype(np.float32)
            if scores is None:
                continue
            hit = np.flatnonzero(scores > 0)
            if allowed_ids is not None:
                hit = hit[np.isin(seg.ids[hit], allowed_ids)]
            found_ids.append(seg.ids[hit])
            found_scores.append(scores[hit])
        if not found_ids:
            return _NO_IDS, _NO_SCORES
        ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
        k = min(k, len(ids))
        if k == 0:
            return _NO_IDS, _NO_SCORES
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((ids[top], -scores[top]))]  # best first; ties by id, as a rebuild would
        return ids[top], scores[top]
