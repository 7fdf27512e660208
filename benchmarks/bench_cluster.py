"""Several app processes behind one port, load-tested on loopback.

HAProxy listens on one port in front of N `docteller serve` processes that share one knowledge-base
index and one session secret; all of them generate through one real `llama_cpp.server` (the
OpenAI-compatible backend, `DOCTELLER_LLM_BACKEND=openai`), as they would through vLLM on a GPU
box. Then the same customer sessions as `bench_load.py` (half upload a statement and ask for its
closing balance, all ask a policy question) run at once through the one port.

Prints p50/p95 per turn kind, errors, how sessions spread over the app processes, and stickiness:
a customer who uploaded to one process and asked on another would be told "upload it first", so
every uploader must get their own closing balance, and no one else may see it.

    python benchmarks/bench_cluster.py                  # 2 apps, 20 sessions, SmolLM2 (fast)
    python benchmarks/bench_cluster.py --packaged-model # Qwen2.5 1.5B in the model server

Needs `haproxy` on PATH (`scripts/setup.sh` installs it with apt). `deploy/haproxy.cfg` is the
configuration below for two apps; tests/test_cluster.py checks the two agree.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_load import KB_SUBSET, STATEMENT, percentile, run_session  # noqa: E402

from ui.server import free_port  # noqa: E402

HAPROXY_TEMPLATE = """\
# docteller: {n} app processes behind one port (HAProxy >= 2.4).
#
# Browsers: HAProxy inserts its own `dt_node` cookie naming the process that served a browser's
# first request, so all its later requests (the page, uploads, Gradio's queue and event stream,
# the `docteller_sid` session cookie) reach that process: a conversation and its uploads live in
# that process's memory. Every process is started with the same DOCTELLER_SESSION_SECRET, so if
# one goes down the next accepts the cookie and starts a fresh conversation instead of failing.
# API clients: requests are routed by a hash of the bearer key, so one key's conversations stay
# on one process. Each process trusts this proxy's X-Forwarded-For
# (DOCTELLER_FORWARDED_ALLOW_IPS=127.0.0.1) so throttling and audit see the real client.
global
    maxconn 4096

defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 330s
    timeout server 330s
    timeout http-keep-alive 10s

frontend docteller
    bind {bind}:{port}
    acl api path_beg /v1/
    use_backend api if api
    default_backend browsers

backend browsers
    balance leastconn
    option httpchk GET /health
    cookie dt_node insert indirect nocache httponly
{browser_servers}

backend api
    balance hdr(Authorization)
    hash-type consistent
    option httpchk GET /health
{api_servers}

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


def haproxy_config(port: int, app_ports: list[int], stats_port: int, bind: str = "127.0.0.1") -> str:
    """HAProxy configuration for `app_ports` (app processes on 127.0.0.1) behind `bind:port`."""
    browser = "\n".join(f"    server app{i} 127.0.0.1:{p} check cookie app{i}" for i, p in enumerate(app_ports, 1))
    api = "\n".join(f"    server app{i} 127.0.0.1:{p} check" for i, p in enumerate(app_ports, 1))
    return HAPROXY_TEMPLATE.format(n=len(app_ports), bind=bind, port=port, stats_port=stats_port,
                                   browser_servers=browser, api_servers=api)


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def start(stack: ExitStack, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A child process logging to a file (a pipe nobody drains would block it), stopped on exit."""
    handle = stack.enter_context(open(log, "wb"))
    proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    return proc


def server_sessions(stats_port: int) -> dict[str, int]:
    """Connections HAProxy sent to each app process of the browser backend (its CSV stats)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5).text.lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {r["svname"]: int(r["stot"]) for r in rows if r["pxname"] == "browsers" and r["svname"].startswith("app")}


class Cluster:
    """llama_cpp.server + N app processes + HAProxy on loopback, in a scratch home."""

    def __init__(self, stack: ExitStack, work: Path, apps: int, gguf: Path, max_new_tokens: int) -> None:
        self.stack, self.work, self.logs = stack, work, work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.model_port, self.port, self.stats_port = free_port(), free_port(), free_port()
        self.app_ports = [free_port() for _ in range(apps)]
        self.env = {
            **os.environ, "DOCTELLER_HOME": str(work / "home"), "DOCTELLER_KB_DIR": str(work / "kb"),
            "DOCTELLER_LLM_BACKEND": "openai", "DOCTELLER_OPENAI_BASE_URL": f"http://127.0.0.1:{self.model_port}/v1",
            "DOCTELLER_SESSION_SECRET": secrets.token_hex(32), "DOCTELLER_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "DOCTELLER_MAX_NEW_TOKENS": str(max_new_tokens), "DOCTELLER_WORKERS": "1",
            "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
        }
        self.gguf = gguf

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        docteller = [sys.executable, "-m", "docteller.cli"]
        subprocess.run([*docteller, "index", str(self.work / "kb")], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)
        model = start(self.stack, [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
                                   "--host", "127.0.0.1", "--port", str(self.model_port), "--n_ctx", "4096"],
                      self.logs / "model.log")
        wait_for(f"http://127.0.0.1:{self.model_port}/v1/models", model, self.logs / "model.log")
        apps = [start(self.stack, [*docteller, "serve", "--port", str(p), "--no-index-kb"],
                      self.logs / f"app{i}.log", self.env) for i, p in enumerate(self.app_ports, 1)]
        for i, (proc, p) in enumerate(zip(apps, self.app_ports), 1):
            wait_for(f"http://127.0.0.1:{p}/health", proc, self.logs / f"app{i}.log")
        config = self.work / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.app_ports, self.stats_port))
        proxy = start(self.stack, [shutil.which("haproxy") or "haproxy", "-db", "-f", str(config)],
                      self.logs / "haproxy.log")
        wait_for(f"{self.url}/health", proxy, self.logs / "haproxy.log", seconds=30)


def scratch_kb(work: Path) -> None:
    from docteller.settings import DEFAULT_KB_DIR

    kb = work / "kb"
    kb.mkdir(parents=True)
    for name in KB_SUBSET:
        (kb / name).write_bytes((DEFAULT_KB_DIR / name).read_bytes())


def report(results: list[dict], wall: float, spread: dict[str, int]) -> bool:
    errors = [e for r in results for e in r["errors"]]
    leaks = [r["session"] for r in results if not r["uploaded"] and r["balance_seen"]]
    missed = [r["session"] for r in results if r["uploaded"] and not r["balance_seen"] and not r["errors"]]
    kinds: dict[str, list[float]] = {}
    for r in results:
        for kind, seconds in r["turns"]:
            kinds.setdefault(kind, []).append(seconds)
    print(f"\n{len(results)} concurrent sessions, {sum(len(r['turns']) for r in results)} turns in {wall:.1f}s")
    print(f"{'turn':<14}{'n':>4}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
    everything = [s for values in kinds.values() for s in values]
    for kind, values in sorted(kinds.items()) + [("all", everything)]:
        print(f"{kind:<14}{len(values):>4}{statistics.median(values) if values else float('nan'):>9.2f}"
              f"{percentile(values, 95):>9.2f}{max(values) if values else float('nan'):>9.2f}")
    print(f"connections per app process (HAProxy): {spread}")
    print(f"errors: {len(errors)}")
    for e in errors[:10]:
        print(f"  - {e}")
    for r in results:
        if r["session"] in missed:
            print(f"  uploader {r['session']} was told: {r['replies'][0][:160]!r}")
    print(f"sticky: uploaders answered from their own statement: "
          f"{sum(r['uploaded'] and r['balance_seen'] for r in results)}/{sum(r['uploaded'] for r in results)}; "
          f"non-uploaders who saw someone's balance: {len(leaks)}")
    return not errors and not leaks and not missed and sum(1 for n in spread.values() if n) == len(spread)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--packaged-model", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--time-limit", type=float, default=900.0)
    args = parser.parse_args()
    if not shutil.which("haproxy"):
        print("haproxy not found (apt-get install haproxy)", file=sys.stderr)
        return 2
    from agent.model_files import default_model_path, smollm2_path

    gguf = default_model_path() if args.packaged_model else smollm2_path()
    with tempfile.TemporaryDirectory(prefix="docteller-cluster-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        scratch_kb(work)
        cluster = Cluster(stack, work, max(1, min(args.apps, 8)), gguf, args.max_new_tokens)
        started = time.perf_counter()
        cluster.up()
        print(f"up in {time.perf_counter() - started:.1f}s: model server, {len(cluster.app_ports)} apps, "
              f"haproxy on {cluster.url} ({gguf.name})")
        sessions = max(1, min(args.sessions, 50))
        deadline = time.monotonic() + args.time_limit
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=sessions) as pool:
            results = list(pool.map(lambda n: run_session(cluster.url + "/", n, deadline), range(sessions)))
        wall = time.perf_counter() - started
        ok = report(results, wall, server_sessions(cluster.stats_port))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
