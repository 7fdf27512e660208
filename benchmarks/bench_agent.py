"""Agent benchmark: streaming overhead against raw llama-cpp-python, and answer quality.

Part 1 (speed) records the agent's real prompt for a few KB questions and, in the same process with
the same loaded model, measures
  - raw: `Llama.create_chat_completion(stream=True)` on that exact prompt, and
  - agent: `ChatSession.ask_stream()` end to end (retrieval, evidence selection, prompt,
    generation, checks),
reporting time to first token (TTFT) and generation tokens/s, and the agent/raw ratio, both cold
(empty KV cache) and warm (the previous request was another question: only the system policy
is cached, the steady state of a running server).
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
    """(ttft seconds, generation tokens/s from the first to the last token, pieces) of a stream."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for _ in pieces:
        count += 1
        last = time.perf_counter()
        if first is None:
            first = last
    if first is None:
        return float("nan"), float("nan"), 0
    rate = (count - 1) / (last - first) if count > 1 and last > first else float("nan")
    return first - start, rate, count


class _RecordingModel:
    """Passes calls through to the real chat model, keeps the last answer prompt it was given and
    when each of the last stream's tokens reached the agent."""

    def __init__(self, model) -> None:
        self.model = model
        self.last_messages = None
        self.token_times: list[float] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def stream(self, messages, **kwargs):
        self.last_messages = messages
        self.token_times = []
        for piece in self.model.stream(messages, **kwargs):
            self.token_times.append(time.perf_counter())
            yield piece

    def tokens_per_second(self) -> float:
        """The model's rate while the agent consumed its stream: the stream is pulled, so whatever
        the agent does per token slows it. (The agent's own events are no count of tokens: a
        citation marker's tokens are held back and shown as one piece.)"""
        times = self.token_times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")

    def choice_probabilities(self, messages, choices):
        self.last_messages = messages
        return self.model.choice_probabilities(messages, choices)


def bench_speed(threads: int, n_questions: int, style: str) -> dict:
    """TTFT and tokens/s, agent vs raw llama-cpp on the agent's own prompt, in two conditions:
    cold (empty KV cache: every prompt token is evaluated) and warm (the previous request was a
    different question, so only the shared system policy is cached, as on a running server)."""
    os.environ["DOCTELLER_LLM_THREADS"] = str(threads)
    from docteller.settings import get_settings

    get_settings.cache_clear()
    from agent.resources import AgentResources

    resources = AgentResources.load()
    model = resources.chat_model
    llm = getattr(model, "llm", None)
    if llm is None:
        raise SystemExit("the speed benchmark needs the llama.cpp backend (DOCTELLER_LLM_BACKEND=llamacpp)")
    recorder = _RecordingModel(model)
    resources.chat_model = recorder
    resources.settings.answer_style = style
    # Extractive answers need one forward pass (the judge's yes/no probability), so their raw
    # baseline is the first token of a completion; generative ones stream the whole answer.
    max_tokens = 1 if style == "extractive" else resources.settings.max_new_tokens
    questions = QUESTIONS[: max(n_questions, 2)]
    prompts = {}
    for question in questions:  # the exact messages the agent sends for each question
        resources.new_session().ask(question)
        prompts[question] = [{"role": m.role, "content": m.content} for m in recorder.last_messages]

    def start_state(mode: str, other: str) -> None:
        llm.reset()
        if mode == "warm":
            for _ in llm.create_chat_completion(messages=prompts[other], stream=True, max_tokens=1):
                pass

    rows = []
    for i, question in enumerate(questions):
        payload = prompts[question]
        other = questions[i - 1]
        prompt_tokens = len(llm.tokenize("".join(m["content"] for m in payload).encode(), add_bos=False))

        def raw_stream():
            for chunk in llm.create_chat_completion(messages=payload, stream=True, max_tokens=max_tokens,
                                                    temperature=0.0, top_k=1, repeat_penalty=1.05):
                if chunk["choices"][0].get("delta", {}).get("content"):
                    yield 1

        def agent_stream():
            for event in resources.new_session().ask_stream(question):
                if event.kind == "token":
                    yield 1

        row = {"question": question, "prompt_tokens": prompt_tokens}
        for mode in ("cold", "warm"):
            start_state(mode, other)
            raw_ttft, raw_rate, raw_n = _time_stream(raw_stream())
            start_state(mode, other)
            recorder.token_times = []
            agent_ttft, _, agent_n = _time_stream(agent_stream())
            agent_rate = recorder.tokens_per_second()
            row |= {
                f"{mode}_raw_ttft_s": round(raw_ttft, 2), f"{mode}_agent_ttft_s": round(agent_ttft, 2),
                f"{mode}_raw_tok_s": round(raw_rate, 2), f"{mode}_agent_tok_s": round(agent_rate, 2),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)

    return _speed_summary(rows, style, model.model_id, threads)


def _speed_summary(rows: list[dict], style: str, model_id: str, threads: int) -> dict:
    """Medians over the questions of each timing, and the agent's share of raw llama-cpp's rate."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    ratios = [r["warm_agent_tok_s"] / r["warm_raw_tok_s"] for r in rows
              if r["warm_raw_tok_s"] and r["warm_agent_tok_s"] == r["warm_agent_tok_s"]]
    summary = {
        "answer_style": style,
        "model": model_id,
        "threads": threads,
        "load_average": os.getloadavg(),
        "median_prompt_tokens": median("prompt_tokens"),
    }
    for mode in ("cold", "warm"):
        for key in ("raw_ttft_s", "agent_ttft_s", "raw_tok_s", "agent_tok_s"):
            summary[f"median_{mode}_{key}"] = median(f"{mode}_{key}")
    summary["tok_s_ratio_agent_over_raw"] = round(statistics.median(ratios), 3) if ratios else None
    summary["rows"] = rows
    return summary


def bench_quality(stride: int, limit: int) -> dict:
    from agent.evaluate import evaluate_answers, load_questions
    from agent.resources import AgentResources

    questions = load_questions()[:: max(stride, 1)]
    if limit:
        questions = questions[:limit]
    return evaluate_answers(AgentResources.load(), questions, progress=True)["summary"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--styles", default="extractive,generative", help="answer styles to time")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--eval", action="store_true", help="also run the answer-quality evaluation")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    for style in args.styles.split(","):
        speed = bench_speed(args.threads, args.questions, style)
        print(f"\n== speed, {style} answers (same process, same prompt, same model) ==")
        for key, value in speed.items():
            if key != "rows":
                print(f"{key:>32}: {value}")
    print("  targets: agent TTFT <= 2.5 s, tokens/s ratio >= 0.9")
    print("  (extractive answers arrive whole after one forward pass (the judge): their tokens/s is not comparable)")
    if args.eval:
        summary = bench_quality(args.stride, args.limit)
        print("\n== answer quality ==")
        for key, value in summary.items():
            print(f"{key:>28}: {value}")
        print("  targets: answer_correct >= 0.85, correct_declines >= 0.95, false_declines <= 0.05")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
