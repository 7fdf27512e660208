"""Retrieval quality on knowledge_base/eval/questions.jsonl: hit@1, hit@5, MRR (target hit@5 ≥ 0.9).

    python benchmarks/bench_retrieval_quality.py [--questions PATH] [--chunk-size 900] [--overlap 120] [--rrf-k 60]

Indexes knowledge_base/documents into a throw-away index so the user's index is untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=Path, default=None)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--rrf-k", type=int, default=None)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--misses", action="store_true", help="List the questions that missed.")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="docteller-bench-")
    os.environ["DOCTELLER_HOME"] = home
    for flag, env in ((args.chunk_size, "CHUNK_SIZE"), (args.overlap, "CHUNK_OVERLAP"), (args.rrf_k, "RRF_K")):
        if flag is not None:
            os.environ[f"DOCTELLER_{env}"] = str(flag)

    from docteller.settings import EVAL_QUESTIONS, get_settings
    from retrieval.indexing import index_paths
    from retrieval.evaluate import evaluate_retrieval, load_questions
    from retrieval.store import KnowledgeIndex

    settings = get_settings()
    index = KnowledgeIndex.open(settings.index_dir)
    started = time.perf_counter()
    summary = index_paths([settings.kb_dir], settings=settings, index=index)
    print(f"indexed {summary.totals()} in {time.perf_counter() - started:.1f} s "
          f"(chunk_size {settings.chunk_size}, overlap {settings.chunk_overlap}, rrf_k {settings.rrf_k})")
    questions = load_questions(args.questions or EVAL_QUESTIONS)
    started = time.perf_counter()
    report = evaluate_retrieval(index, questions, k=args.k)
    per_query = (time.perf_counter() - started) / max(report.questions, 1)
    print(f"{report.questions} answerable questions: hit@1 {report.hit_at_1:.3f}  hit@{args.k} {report.hit_at_k:.3f}  "
          f"MRR {report.mrr:.3f}  ({per_query * 1000:.0f} ms/query incl. embedding)")
    if args.misses:
        for miss in report.misses:
            print(f"  miss {miss['id']}: {miss['question']!r} want {miss['doc']} p.{miss['page']} got {miss['got']}")
    index.close()


if __name__ == "__main__":
    main()
