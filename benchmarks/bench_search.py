"""Hybrid search latency (FAISS + BM25 + RRF) at 10k / 100k / 1M chunks, and index RAM per 100k.

    python benchmarks/bench_search.py [--sizes 10000,100000,1000000] [--queries 200]

Synthetic but realistic in shape: 384-d normalised vectors (MiniLM's size) drawn around 2,000
topic centres, and 60-token passages over a 30,000-word Zipf vocabulary. The same classes the
store uses are timed (`FaissVectorIndex`, `BM25Index`, `reciprocal_rank_fusion`); flat exact
search below `hnsw_threshold`, HNSW above it (built once per size). A Staff upload's BM25 update (one 4-chunk document added, then
deleted) is timed against the full build. Query embedding is excluded
(it is a constant ~10 ms for MiniLM on CPU) and so is the SQLite fetch of the k chunk rows.
Targets: p95 ≤ 20 ms at 100k, ≤ 60 ms at 1M.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 384


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    topic = rng.integers(0, 2000, n)
    vectors = centres[topic] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vocab = np.array([f"w{i}" for i in range(30_000)])
    ranks = np.minimum(rng.zipf(1.2, size=(n, 60)), 30_000) - 1
    texts = [" ".join(vocab[r]) for r in ranks]
    q_topic = rng.integers(0, 2000, 200)
    queries = centres[q_topic] + 0.6 * rng.standard_normal((200, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    q_texts = [" ".join(vocab[rng.integers(0, 3000, 4)]) for _ in range(200)]
    return vectors, texts, queries, q_texts


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    from docteller.settings import get_settings
    from retrieval.bm25 import BM25Index
    from retrieval.store import reciprocal_rank_fusion
    from retrieval.vector import FaissVectorIndex

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    settings = get_settings()
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.sizes.split(",")):
        vectors, texts, queries, q_texts = synthetic(n, rng)
        before = rss_mb()
        t = time.perf_counter()
        vindex = FaissVectorIndex(DIM, hnsw_threshold=settings.hnsw_threshold, use_gpu=settings.use_gpu)
        for start in range(0, n, 100_000):
            vindex.add(np.arange(start, min(n, start + 100_000)), vectors[start : start + 100_000])
        build_vec = time.perf_counter() - t
        t = time.perf_counter()
        bm25 = BM25Index()
        bm25.build(np.arange(n), texts)
        build_bm25 = time.perf_counter() - t
        ram = rss_mb() - before
        # A Staff upload of one 4-chunk document, then its deletion: BM25 is updated in place;
        # the ratio is against the full rebuild above (what an upload cost before).
        t = time.perf_counter()
        bm25.add(np.arange(n, n + 4), texts[:4])
        add_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        bm25.remove(np.arange(n, n + 4))
        remove_ms = (time.perf_counter() - t) * 1000
        del texts
        depth = max(4 * args.k, 40)
        latencies = []
        for i in range(min(args.queries, len(q_texts))):
            t = time.perf_counter()
            _, v_ids = vindex.search(queries[i], depth)
            b_ids, _ = bm25.search(q_texts[i], depth)
            reciprocal_rank_fusion([v_ids[0][v_ids[0] >= 0], b_ids], settings.rrf_k, args.k)
            latencies.append((time.perf_counter() - t) * 1000)
        p50, p95 = np.percentile(latencies, [50, 95])
        print(
            f"{n:>9,} chunks  {vindex.kind:<5} build vec {build_vec:6.1f} s, bm25 {build_bm25:5.1f} s | "
            f"hybrid search p50 {p50:6.2f} ms  p95 {p95:6.2f} ms | index RAM {ram:7.0f} MB "
            f"({ram / n * 100_000:.0f} MB per 100k chunks) | BM25 update for a 4-chunk upload: add "
            f"{add_ms:.1f} ms, delete {remove_ms:.1f} ms ({build_bm25 * 1000 / add_ms:,.0f}x less than a rebuild)",
            flush=True,
        )
        del vindex, bm25, vectors


if __name__ == "__main__":
    main()
