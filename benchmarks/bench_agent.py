"""Agent benchmark: streaming overhead against raw llama-cpp-python, and answer quality.

Part 1 (speed) builds the agent's real prompt for a few KB questions and, in the same process with
the same loaded model, measures
  - raw: `Llama.create_chat_completion(stream=True)` on that exact prompt, and
  - agent: `ChatSession.ask_stream()` end to end (retrieval, prompt, generation, checks),
reporting time to first token (TTFT) and generation tokens/s, and the agent/raw ratio.
Part 2 (quality, `--eval`) runs the answer evaluation on knowledge_base/eval/questions.jsonl.

    python benchmarks/bench_agent.py [--threads 2] [--questions 3] [--eval] [--stride 4]

Targets: TTFT <= 2.5 s, agent tokens/s >= 0.9x raw; answers >= 0.85 correct, >= 0.95 correct
declines, <= 0.05 false declines. The figures depend heavily on machine load: note it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "is there a max on how much I can wire in the US per day through online banking?",
    "how much is a cashiers check",
    "what's the charge to stop payment on a check i wrote",
    "how long is a preapproval letter good for?",
]


def _time_stream(pieces) -> tuple[float, float, int]:
    """(ttft seconds, generation tokens/s after the first token, pieces) of a text stream."""
    start = time.perf_counter()
    first = None
    count = 0
    for _ in pieces:
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        return float("nan"), float("nan"), 0
    rate = (count - 1) / (end - first) if count > 1 and end > first else float("nan")
    return first - start, rate, count


def bench_speed(threads: int, n_questions: int) -> dict:
    os.environ["DOCTELLER_LLM_THREADS"] = str(threads)
    from docteller.settings import get_settings

    get_settings.cache_clear()
    from agent.prompt import build_messages, number_passages
    from agent.session import KB_TOP_K, PROMPT_PASSAGES, AgentResources

    resources = AgentResources.load()
    model = resources.chat_model
    llm = getattr(model, "llm", None)
    if llm is None:
        raise SystemExit("the speed benchmark needs the llama.cpp backend (DOCTELLER_LLM_BACKEND=llamacpp)")
    max_tokens = resources.settings.max_new_tokens
    rows = []
    for question in QUESTIONS[:n_questions]:
        hits = resources.kb.search(question, k=KB_TOP_K)[:PROMPT_PASSAGES]
        messages = build_messages(question, number_passages(hits, []))
        payload = [{"role": m.role, "content": m.content} for m in messages]
        prompt_tokens = model.count_tokens("".join(m.content for m in messages))

        def raw_stream():
            llm.reset()  # no KV-cache reuse from the previous run: both sides start cold
            for chunk in llm.create_chat_completion(messages=payload, stream=True, max_tokens=max_tokens,
                                                    temperature=0.0, top_k=1, repeat_penalty=1.05):
                if chunk["choices"][0].get("delta", {}).get("content"):
                    yield 1

        def agent_stream():
            llm.reset()
            session = resources.new_session()
            for event in session.ask_stream(question):
                if event.kind == "token":
                    yield 1

        raw_ttft, raw_rate, raw_n = _time_stream(raw_stream())
        agent_ttft, agent_rate, agent_n = _time_stream(agent_stream())
        rows.append(
            {
                "question": question,
                "prompt_tokens": prompt_tokens,
                "raw_ttft_s": round(raw_ttft, 2),
                "agent_ttft_s": round(agent_ttft, 2),
                "raw_tok_s": round(raw_rate, 2),
                "agent_tok_s": round(agent_rate, 2),
                "raw_pieces": raw_n,
                "agent_pieces": agent_n,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    ratios = [r["agent_tok_s"] / r["raw_tok_s"] for r in rows if r["raw_tok_s"] and r["agent_tok_s"] == r["agent_tok_s"]]
    return {
        "model": model.model_id,
        "threads": threads,
        "load_average": os.getloadavg(),
        "median_raw_ttft_s": statistics.median(r["raw_ttft_s"] for r in rows),
        "median_agent_ttft_s": statistics.median(r["agent_ttft_s"] for r in rows),
        "median_raw_tok_s": statistics.median(r["raw_tok_s"] for r in rows),
        "median_agent_tok_s": statistics.median(r["agent_tok_s"] for r in rows),
        "tok_s_ratio_agent_over_raw": round(statistics.median(ratios), 3) if ratios else None,
        "rows": rows,
    }


def bench_quality(stride: int, limit: int) -> dict:
    from agent.evaluate import evaluate_answers, load_questions
    from agent.session import AgentResources

    questions = load_questions()[:: max(stride, 1)]
    if limit:
        questions = questions[:limit]
    return evaluate_answers(AgentResources.load(), questions, progress=True)["summary"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--eval", action="store_true", help="also run the answer-quality evaluation")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    speed = bench_speed(args.threads, args.questions)
    print("\n== speed (same process, same prompt, same model) ==")
    for key in ("model", "threads", "load_average", "median_raw_ttft_s", "median_agent_ttft_s",
                "median_raw_tok_s", "median_agent_tok_s", "tok_s_ratio_agent_over_raw"):
        print(f"{key:>28}: {speed[key]}")
    print("  targets: agent TTFT <= 2.5 s, tokens/s ratio >= 0.9")
    if args.eval:
        summary = bench_quality(args.stride, args.limit)
        print("\n== answer quality ==")
        for key, value in summary.items():
            print(f"{key:>28}: {value}")
        print("  targets: answer_correct >= 0.85, correct_declines >= 0.95, false_declines <= 0.05")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
