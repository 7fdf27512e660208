"""Two app processes' worth of docteller behind one HAProxy port, on loopback: the shipped
`deploy/haproxy.cfg` is what the load test runs, browsers stick to the process holding their
conversation, and both processes take customers. (The timed run with a real llama_cpp.server as the
shared model is `benchmarks/bench_cluster.py`.)"""

from __future__ import annotations

import shutil
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cluster import haproxy_config, start, wait_for  # noqa: E402

from ui.server import free_port  # noqa: E402

KB_FILE = "cards-lost-stolen-and-disputes.md"


class QuickModel:
    """Answers at once; the test is about routing, not wording."""

    model_id = "quick-test-model"
    model_hash = "1" * 64

    def stream(self, messages, *, max_tokens: int = 320, temperature: float = 0.0):
        yield "Call the 24/7 card line to block a lost card [S1]."


def test_the_shipped_haproxy_config_is_the_load_tested_one() -> None:
    shipped = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert shipped == haproxy_config(7860, [7861, 7862], 7869, bind="0.0.0.0")
    assert "cookie dt_node insert" in shipped and "option forwardfor" in shipped


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not shutil.which("haproxy"):
        pytest.skip("haproxy not installed (scripts/setup.sh installs it with apt-get as root)")
    from docteller.settings import DEFAULT_KB_DIR, Settings
    from ui.app import create_app
    from ui.backend import Backend
    from ui.server import BackgroundServer

    home, kb = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("kb")
    (kb / KB_FILE).write_bytes((DEFAULT_KB_DIR / KB_FILE).read_bytes())
    settings = Settings(home=home, kb_dir=kb, workers=1, answer_style="generative",
                        session_secret="one-secret-shared-by-every-app-process-0123456789")
    with ExitStack() as stack:
        backends, urls = [], []
        for _ in range(2):  # two apps over one shared index, as two processes would be
            backend = Backend(settings, chat_model=QuickModel())
            backend.ensure_kb_indexed()
            server = stack.enter_context(BackgroundServer(create_app(backend=backend)))
            backends.append(backend)
            urls.append(server.url)
        port, stats = free_port(), free_port()
        work = tmp_path_factory.mktemp("haproxy")
        config = work / "haproxy.cfg"
        config.write_text(haproxy_config(port, [int(u.rsplit(":", 1)[1]) for u in urls], stats))
        proxy = start(stack, [shutil.which("haproxy"), "-db", "-f", str(config)], work / "haproxy.log")
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/health", proxy, work / "haproxy.log", seconds=30)
        yield url, backends


def test_each_browser_sticks_to_the_process_that_holds_its_conversation(cluster) -> None:
    from gradio_client import Client

    url, backends = cluster
    clients = [Client(url + "/", verbose=False) for _ in range(4)]
    for client in clients:
        assert client.cookies.get("dt_node") in {"app1", "app2"}  # HAProxy named the process
        assert client.cookies.get("docteller_sid")  # the app's own session cookie came through
    turns = ["How do I report a lost card?", "And a stolen one?", "Thanks"]
    histories = {}
    for turn in turns:  # interleaved, as customers' turns arrive
        for n, client in enumerate(clients):
            _, histories[n] = client.predict({"text": turn, "files": []}, api_name="/chat")
    for history in histories.values():
        # Every turn is in one history: each request reached the process holding the conversation.
        asked = [part["text"] for m in history if m["role"] == "user" for part in m["content"]
                 if part.get("type") == "text"]
        assert asked == turns
    assert all(len(b.sessions) >= 1 for b in backends)  # new browsers were spread over both
    assert {c.cookies["dt_node"] for c in clients} == {"app1", "app2"}
