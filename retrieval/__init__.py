"""Retrieval: FAISS vectors + BM25 fused with reciprocal-rank fusion, with citations."""
