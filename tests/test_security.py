"""Attacks on a running docteller, each on 127.0.0.1 against the real app, each asserted to fail.

One app per module: the real FastAPI + Gradio app, retrieval, extraction and agent, with a
scripted chat model (so that a slow, endless generation can be provoked on demand) and small
limits so that flooding them takes a handful of requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

STAFF_TOKEN = "staff-token-for-security-tests"
API_KEY = "api-key-one"
OTHER_KEY = "api-key-two"
FLOOD_KEY = "api-key-three"
RATE_KEY = "api-key-four"
KB_SUBSET = ["fee-schedule.pdf", "branches-and-contact.html", "cards-lost-stolen-and-disputes.md"]
PASSPORT = "ids/passporteye/tests_data/passport-td3.png"
PASSPORT_NUMBER = "L898902C3"  # the ICAO specimen's document number


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ScriptedModel:
    """A chat model whose answer is quick, unless the question asks for 'SLOW': then it writes
    one token every 0.1 s for a minute. Records when a generation was stopped early."""

    model_id = "scripted-test-model"
    model_hash = "0" * 64

    def __init__(self) -> None:
        self.stopped_early = threading.Event()
        self.generations = 0

    def stream(self, messages, *, max_tokens: int = 320, temperature: float = 0.0):
        self.generations += 1
        slow = "SLOW" in messages[-1].content
        if not slow:
            yield "The overdraft fee is $35 per item [S1]."
            return
        finished = False
        try:
            for n in range(min(600, max_tokens)):
                time.sleep(0.1)
                yield f" word{n}"
            finished = True
        finally:
            if not finished:
                self.stopped_early.set()


@pytest.fixture(scope="module")
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture(scope="module")
def server(tmp_path_factory, model):
    from docteller.settings import DEFAULT_KB_DIR, Settings
    from ui.app import create_app
    from ui.backend import Backend
    from ui.server import BackgroundServer

    home = tmp_path_factory.mktemp("home")
    kb = tmp_path_factory.mktemp("kb")
    for name in KB_SUBSET:
        (kb / name).write_bytes((DEFAULT_KB_DIR / name).read_bytes())
    settings = Settings(
        home=home, kb_dir=kb, staff_token=STAFF_TOKEN, api_keys=f"{API_KEY},{OTHER_KEY},{FLOOD_KEY},{RATE_KEY}",
        answer_style="generative", workers=1, max_upload_mb=5, max_message_chars=500,
        rate_limit_per_minute=1000, max_streams_per_client=2, answer_time_budget_s=4.0,
        max_api_conversations_per_key=3, session_protect_minutes=10, max_new_tokens=600,
    )
    backend = Backend(settings, chat_model=model)
    backend.ensure_kb_indexed()
    backend.warm_up()
    backend.resources.new_session().ask("What is the overdraft fee?")  # sentence vectors built now
    with BackgroundServer(create_app(backend=backend)) as srv:
        srv.backend = backend
        srv.settings = settings
        yield srv


def ask(server, text: str, key: str = API_KEY, user: str | None = None, timeout: float = 120) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}]}
    if user:
        body["user"] = user
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=auth(key), timeout=timeout)


def gradio_client(server):
    from gradio_client import Client

    return Client(server.url + "/", verbose=False)


def sid_of(server, client) -> str:
    sid = server.backend.cookies.verify(client.cookies.get("docteller_sid"))
    assert sid, "the server issued no session cookie"
    return sid


# --- 1. sessions: client strings are never keys or paths ------------------------------------


def test_a_session_id_of_dot_dot_deletes_nothing(server, corpus):
    from gradio_client import handle_file

    sentinel = Path(tempfile.gettempdir()) / "docteller-security-sentinel.txt"
    sentinel.write_text("still here")
    victim = gradio_client(server)
    victim.predict({"text": "", "files": [handle_file(str(corpus / PASSPORT))]}, api_name="/chat")
    victim_session = server.backend.web_session(sid_of(server, victim))
    assert len(victim_session.uploads) == 1
    kept = next(iter(victim_session.uploads.values())).path
    for hostile in ("..", ".", "/", "../../etc"):
        attacker = gradio_client(server)
        attacker.session_hash = hostile
        attacker.predict(api_name="/new_conversation")
    assert sentinel.exists() and kept.exists()
    assert len(victim_session.uploads) == 1
    sentinel.unlink()


def test_presenting_another_tabs_session_hash_shows_nothing_of_it(server, corpus):
    from gradio_client import handle_file

    victim = gradio_client(server)
    _, history = victim.predict({"text": "", "files": [handle_file(str(corpus / PASSPORT))]}, api_name="/chat")
    assert any("passport" in json.dumps(m["content"]).lower() for m in history)
    attacker = gradio_client(server)
    attacker.session_hash = victim.session_hash  # what used to be the whole key
    _, seen = attacker.predict({"text": "", "files": []}, api_name="/chat")
    assert seen == []
    assert server.backend.web_key(sid_of(server, attacker)) != server.backend.web_key(sid_of(server, victim))


def test_a_forged_or_tampered_cookie_gets_a_fresh_session(server):
    cookies = server.backend.cookies
    sid, value = cookies.issue()
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert cookies.verify(value) == sid and cookies.verify(forged) is None
    r = httpx.get(server.url + "/", cookies={"docteller_sid": forged}, timeout=30)
    issued = r.cookies.get("docteller_sid")
    assert issued and issued != forged and cookies.verify(issued) not in (None, sid)
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Lax" in r.headers["set-cookie"]


def test_api_conversations_are_scoped_to_their_key_and_need_one(server):
    assert ask(server, "What is the overdraft fee?", key="not-a-key").status_code == 401
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 401
    assert ask(server, "What is the overdraft fee?", user="alice").status_code == 200
    assert ask(server, "What is the overdraft fee?", key=OTHER_KEY, user="alice").status_code == 200
    mine = server.backend.api_session(API_KEY, "alice")
    theirs = server.backend.api_session(OTHER_KEY, "alice")
    assert mine is not theirs
    assert [a.question for a in mine.answers] == ["What is the overdraft fee?"]
    assert [a.question for a in theirs.answers] == ["What is the overdraft fee?"]


def test_the_audit_log_holds_no_session_handles(server):
    client = gradio_client(server)
    client.predict({"text": "What is the overdraft fee?", "files": []}, api_name="/chat")
    ask(server, "What is the overdraft fee?", user="bob")
    audit = server.settings.audit_path.read_text()
    entries = [json.loads(line) for line in audit.splitlines()]
    assert entries
    for secret in (client.cookies["docteller_sid"], sid_of(server, client), client.session_hash, "bob", API_KEY):
        assert secret not in audit
    assert all(len(e["session_id"]) == 32 for e in entries if "session_id" in e)


# --- 2. uploads do not outlive their session, and are served to no one else ----------------


def test_gradio_uploads_are_served_only_to_their_session(server):
    owner, stranger = gradio_client(server), gradio_client(server)
    r = httpx.post(
        server.url + "/gradio_api/upload", files=[("files", ("note.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png"))],
        cookies=owner.cookies, timeout=30,
    )
    assert r.status_code == 200, r.text
    path = r.json()[0]
    for _ in range(50):  # Gradio moves the upload into its cache in a background task
        if Path(path).exists():
            break
        time.sleep(0.1)
    url = f"{server.url}/gradio_api/file={path}"
    assert httpx.get(url, cookies=owner.cookies, timeout=30).status_code == 200
    assert httpx.get(url, cookies=stranger.cookies, timeout=30).status_code == 404
    assert httpx.get(url, timeout=30).status_code == 404


def test_page_previews_are_served_only_to_their_session(server):
    from ui.security import preview_prefix

    owner, stranger = gradio_client(server), gradio_client(server)
    cache = server.backend.gradio_cache_dirs[0]
    folder = cache / "previewtest"
    folder.mkdir(parents=True, exist_ok=True)
    preview = folder / f"{preview_prefix(sid_of(server, owner))}1.png"
    preview.write_bytes(b"\x89PNG\r\n\x1a\n")
    url = f"{server.url}/gradio_api/file={preview}"
    assert httpx.get(url, cookies=owner.cookies, timeout=30).status_code == 200
    assert httpx.get(url, cookies=stranger.cookies, timeout=30).status_code == 404


def test_a_customer_upload_leaves_no_copy_in_gradios_cache_and_goes_with_the_session(server, corpus):
    from gradio_client import handle_file

    client = gradio_client(server)
    client.predict({"text": "", "files": [handle_file(str(corpus / PASSPORT))]}, api_name="/chat")
    cache = server.backend.gradio_cache_dirs[0]
    assert not list(cache.glob("*/passport-td3.png"))  # Gradio's cached copy deleted once read
    session = server.backend.web_session(sid_of(server, client))
    folder = session.upload_dir
    assert any(folder.iterdir())
    assert folder.parent == server.backend._upload_root and folder.name.startswith("s-")
    client.predict(api_name="/new_conversation")
    assert not session.uploads and not any(folder.iterdir())
    server.backend.sessions.drop(session.key)  # what idle expiry and tab close end in
    assert not folder.exists()


def test_a_closed_tab_session_ends_after_its_grace_unless_it_returns(server):
    client = gradio_client(server)
    client.predict({"text": "", "files": []}, api_name="/chat")
    key = server.backend.web_key(sid_of(server, client))
    session = server.backend.sessions.peek(key)
    session.expire_after(0.0)
    assert server.backend.sessions.sweep() >= 1
    assert server.backend.sessions.peek(key) is None


# --- 3. abuse: sizes, rates, floods, disconnects -------------------------------------------


def test_an_overlong_message_is_refused_at_once(server, model):
    before = model.generations
    started = time.monotonic()
    r = ask(server, "overdraft " * 3000)  # 30 KB
    assert r.status_code == 413 and "limit is 500" in r.json()["detail"]
    assert time.monotonic() - started < 5 and model.generations == before
    client = gradio_client(server)
    _, history = client.predict({"text": "fee " * 300, "files": []}, api_name="/chat")
    assert "too long" in json.dumps(history[-1]["content"]) and model.generations == before


def test_a_huge_body_is_refused_from_its_headers_before_auth_or_reading(server):
    def raw(path: str, headers: str) -> str:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 314572800\r\n"
                f"Content-Type: multipart/form-data; boundary=x\r\n{headers}\r\n".encode()
            )
            return sock.recv(4096).decode("latin-1")  # answered without sending one body byte

    assert raw("/v1/index", "").startswith("HTTP/1.1 413")
    assert raw("/v1/extract", f"Authorization: Bearer {API_KEY}\r\n").startswith("HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/index HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        assert sock.recv(4096).decode("latin-1").startswith("HTTP/1.1 401")  # auth before the body


def test_a_flood_of_api_conversations_never_evicts_a_live_one(server):
    for user in ("live", "u1", "u2"):
        assert ask(server, "What is the overdraft fee?", key=FLOOD_KEY, user=f"flood-{user}").status_code == 200
    refused = [ask(server, "What is the overdraft fee?", key=FLOOD_KEY, user=f"flood-new-{n}").status_code for n in range(20)]
    assert set(refused) == {503}
    r = ask(server, "What is the overdraft fee?", key=FLOOD_KEY, user="flood-live")
    assert r.status_code == 200
    assert len(server.backend.api_session(FLOOD_KEY, "flood-live").answers) == 2
    assert ask(server, "What is the overdraft fee?", user="another-key-still-served").status_code == 200


def test_the_request_rate_per_client_is_capped(server):
    limiter = server.backend.rate_limiter
    old = limiter.per_minute
    limiter.per_minute = 3
    try:
        codes = [ask(server, "What is the overdraft fee?", key=RATE_KEY).status_code for _ in range(5)]
    finally:
        limiter.per_minute = old
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_a_disconnected_stream_stops_generating(server, model):
    model.stopped_early.clear()
    body = {"messages": [{"role": "user", "content": "What is the overdraft fee? SLOW"}], "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=auth(), timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any("word" in line for line in got)  # it was generating when the client left
    assert model.stopped_early.wait(5), "generation went on after the client disconnected"


def test_concurrent_streams_per_client_are_capped(server, model, monkeypatch):
    monkeypatch.setattr(server.settings, "answer_time_budget_s", 120.0)  # the two streams must outlast the third
    body = {"messages": [{"role": "user", "content": "What is the overdraft fee? SLOW"}], "stream": True}
    _streams_wound_down(server)
    opened, readers = [], []
    try:
        for _ in range(2):
            r = httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=auth(), timeout=60)
            response = r.__enter__()
            opened.append(r)
            assert response.status_code == 200
            readers.append(response.iter_lines())  # kept: a dropped reader closes its connection
            next(readers[-1])
        third = ask(server, "What is the overdraft fee?")
        assert third.status_code == 429
    finally:
        for r in opened:
            r.__exit__(None, None, None)


def _streams_wound_down(server, timeout_s: float = 30.0) -> None:
    """Wait until earlier tests' answers have released their slots (a closed stream stops at its
    next token), so a test's own requests are not refused as concurrent ones."""
    limiter = server.backend.stream_limiter
    deadline = time.monotonic() + timeout_s
    while limiter._active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not limiter._active, "earlier answers still hold their slots"


def test_an_answer_past_its_time_budget_is_stopped_and_a_person_offered(server, model):
    _streams_wound_down(server)
    model.stopped_early.clear()
    started = time.monotonic()
    r = ask(server, "What is the overdraft fee? SLOW")
    body = r.json()
    assert r.status_code == 200 and body["abstained"] is True
    assert "Talk to a person" in body["choices"][0]["message"]["content"]
    assert time.monotonic() - started < 15 and model.stopped_early.wait(5)


def test_a_customer_waiting_for_the_model_is_told_their_place_in_line(server, model):
    """One customer's slow answer holds the shared model: the next customer's answer says how
    many are ahead, then starts when the model is free (here: the first customer left)."""
    from ui.backend import Status, TurnCancelled
    from ui.model_queue import queue_status

    _streams_wound_down(server)
    backend = server.backend
    first, second = backend.new_api_session(), backend.new_api_session()
    leave = threading.Event()

    def slow_customer() -> None:
        try:
            for _ in first.ask_stream("What is the overdraft fee? SLOW", cancel=leave):
                pass
        except TurnCancelled:
            pass

    holder = threading.Thread(target=slow_customer, daemon=True)
    holder.start()
    deadline = time.monotonic() + 30
    while not backend.model_queue.busy:  # the slow answer is generating
        assert time.monotonic() < deadline, "the slow answer never reached the model"
        time.sleep(0.02)
    generations = model.generations
    events = second.ask_stream("What is the overdraft fee?")
    assert next(events) == Status(queue_status(1))
    assert model.generations == generations  # still waiting: the model has not been asked
    leave.set()  # the first customer goes away: the model is free
    rest = list(events)
    statuses = [e.text for e in rest if isinstance(e, Status)]
    assert statuses == [second.working_status]  # back to "searching" once served
    final = rest[-1]
    assert final.question == "What is the overdraft fee?" and model.generations == generations + 1
    holder.join(10)
    first.close()
    second.close()


def test_the_audit_log_rotates(tmp_path):
    from agent.audit import AuditEntry, AuditLog

    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2000, backups=2)
    entry = AuditEntry(time="t", session_id="s", question="q" * 300, retrieved_chunk_ids=[], fields_used=[],
                       answer="a", abstained=False, model_id="m", model_sha256="h")
    for _ in range(30):
        log.write(entry)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())


# --- 4. personal data masked by value --------------------------------------------------------


def test_extract_masks_document_numbers_unless_staff_asks_and_is_audited(server, corpus):
    path = corpus / PASSPORT
    files = {"file": (path.name, path.read_bytes(), "image/png")}
    r = httpx.post(server.url + "/v1/extract", files=files, headers=auth(), timeout=300)
    assert r.status_code == 200 and PASSPORT_NUMBER not in r.text
    assert r.json()["fields"]["document_number"]["value"].endswith(PASSPORT_NUMBER[-4:])
    r = httpx.post(server.url + "/v1/extract?unmasked=true", files=files, headers=auth(), timeout=300)
    assert r.status_code == 403
    r = httpx.post(server.url + "/v1/extract?unmasked=true", files=files, headers=auth(STAFF_TOKEN), timeout=300)
    assert r.status_code == 200 and r.json()["fields"]["document_number"]["value"] == PASSPORT_NUMBER
    audit = [json.loads(x) for x in server.settings.audit_path.read_text().splitlines()]
    assert any(e.get("event") == "staff.extract_unmasked" and e["detail"]["file"] == path.name for e in audit)


def test_a_number_misread_into_another_field_is_masked_there_too(corpus):
    from docteller.model import Check, Field
    from ingest.extract import extract
    from ui import render

    result = extract(corpus / PASSPORT)
    number = result.fields["document_number"].value
    assert number == PASSPORT_NUMBER
    # The misreading the issue reports: the number read as the printed expiry date.
    result.fields["printed_expiry_date"] = Field(name="printed_expiry_date", value=number, source="visual")
    result.checks["visual_expiry_date"] = Check(name="visual_expiry_date", ok=False, detail=f"printed {number} vs MRZ")
    shown = render.fields_html(result) + render.checks_html(result) + json.dumps(render.masked_extraction_json(result))
    assert number not in shown and number[-4:] in shown


def test_the_page_preview_blanks_the_mrz(corpus):
    from ingest.extract import extract
    from ui import render

    result = extract(corpus / PASSPORT)
    mrz = result.fields["document_number"]
    boxes = render.redaction_boxes(result, mrz.page or 1)
    assert any(b.bbox == mrz.bbox for b in boxes)  # the MRZ zone, which spells the number
    image = render.render_document_page(corpus / PASSPORT, "image/png", mrz.page or 1, render.field_boxes(result, 1))
    x0, y0, x1, y1 = (int(v) for v in mrz.bbox.as_list())
    scale = image.width / _image_width(corpus / PASSPORT)
    centre = (int((x0 + x1) / 2 * scale), int((y0 + y1) / 2 * scale))
    assert image.convert("RGBA").getpixel(centre)[:3] == render.REDACT_FILL[:3]
    # The personal number printed in the visual zone ('Z E 184226 B') is blanked as well.
    personal = result.fields["personal_number"].value
    spots = [r for r in result.redactions if r.page == (mrz.page or 1)]
    assert personal and spots and all(any(b.bbox == r.bbox for b in boxes) for r in spots)


def _image_width(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width


# --- 5. staff ----------------------------------------------------------------------------


def test_the_staff_token_is_compared_exactly_and_failures_are_throttled(server):
    from ui.security import token_equals

    doc = [("files", ("a.md", b"# A\nText.\n", "text/markdown"))]
    url = server.url + "/v1/index"
    assert not token_equals(f" {STAFF_TOKEN} ", STAFF_TOKEN) and not token_equals(STAFF_TOKEN.upper(), STAFF_TOKEN)
    assert httpx.post(url, files=doc, headers=auth(STAFF_TOKEN + "x"), timeout=60).status_code == 401
    server.backend.staff_throttle.succeeded("127.0.0.1")
    codes = [httpx.post(url, files=doc, headers=auth("guess"), timeout=60).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and 429 in codes[5:]
    r = httpx.post(url, files=doc, headers=auth(STAFF_TOKEN), timeout=60)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # even the right token waits
    server.backend.staff_throttle.succeeded("127.0.0.1")


def test_a_changed_staff_upload_replaces_its_old_version_under_its_own_name(server):
    url = server.url + "/v1/index"
    first = [("files", ("vault-rules.md", b"# Vault rules\n\nThe vault opens at 9 am on weekdays.\n", "text/markdown"))]
    second = [("files", ("vault-rules.md", b"# Vault rules\n\nThe vault opens at 10 am on weekdays.\n", "text/markdown"))]
    r1 = httpx.post(url, files=first, headers=auth(STAFF_TOKEN), timeout=120)
    r2 = httpx.post(url, files=second, headers=auth(STAFF_TOKEN), timeout=120)
    assert r1.status_code == 200 and r1.json()["results"][0]["status"] == "indexed"
    assert r2.status_code == 200 and r2.json()["results"][0]["status"] == "replaced"
    docs = [d for d in server.backend.documents() if d.source == "vault-rules.md"]
    assert len(docs) == 1
    hits = server.backend.search("when does the vault open", k=3)
    assert any("10 am" in h.chunk.text for h in hits) and not any("9 am" in h.chunk.text for h in hits)
    assert all("docteller-" not in h.chunk.source for h in hits)  # no temp paths as sources
    audit = [json.loads(x) for x in server.settings.audit_path.read_text().splitlines()]
    indexed = [e for e in audit if e.get("event") == "staff.index"]
    assert indexed and indexed[-1]["detail"]["files"][0]["file"] == "vault-rules.md"
    assert indexed[-1]["actor"].startswith("staff-") and indexed[-1]["client"] == "127.0.0.1"
    assert STAFF_TOKEN not in server.settings.audit_path.read_text()


def test_a_staff_delete_is_audited(server):
    doc_id = next(d.doc_id for d in server.backend.documents() if d.source == "vault-rules.md")
    from ui.backend import StaffActor

    assert server.backend.delete_document(doc_id, actor=StaffActor(name="staff-x", client="127.0.0.1"))
    audit = [json.loads(x) for x in server.settings.audit_path.read_text().splitlines()]
    assert any(e.get("event") == "staff.delete" and e["detail"]["doc_id"] == doc_id for e in audit)


def test_index_records_a_publisher_given_as_a_form_field_and_caps_it(server):
    url = server.url + "/v1/index"
    files = [("files", ("agreement.md", b"# Other bank agreement\n\nWires cost $40 at the other bank.\n", "text/markdown"))]
    too_long = httpx.post(url, files=files, data={"publisher": "B" * 81}, headers=auth(STAFF_TOKEN), timeout=60)
    assert too_long.status_code == 422
    r = httpx.post(url, files=files, data={"publisher": "Other\x07 Bank"}, headers=auth(STAFF_TOKEN), timeout=120)
    assert r.status_code == 200
    (doc,) = [d for d in server.backend.documents() if d.source == "agreement.md"]
    assert doc.publisher == "Other Bank"
    again = httpx.post(url, files=files, headers=auth(STAFF_TOKEN), timeout=120)  # left out: kept
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "unchanged"
    assert next(d for d in server.backend.documents() if d.source == "agreement.md").publisher == "Other Bank"
    assert server.backend.delete_document(doc.doc_id)


def test_index_answers_422_when_every_file_fails(server):
    r = httpx.post(
        server.url + "/v1/index", files=[("files", ("broken.pdf", b"%PDF-1.7\ngarbage", "application/pdf"))],
        headers=auth(STAFF_TOKEN), timeout=60,
    )
    assert r.status_code == 422 and r.json()["results"][0]["status"] == "failed"


# --- 6. HTTP ---------------------------------------------------------------------------------


def test_security_headers_and_no_cors_for_unknown_origins(server):
    for path in ("/", "/health"):
        r = httpx.get(server.url + path, headers={"Origin": "http://localhost:9999"}, timeout=30)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "access-control-allow-origin" not in r.headers
    r = httpx.options(
        server.url + "/v1/chat/completions",
        headers={"Origin": "http://localhost:9999", "Access-Control-Request-Method": "POST"}, timeout=30,
    )
    assert "access-control-allow-origin" not in r.headers


def test_api_docs_are_off_by_default(server):
    assert httpx.get(server.url + "/docs", timeout=30).status_code == 404
    assert httpx.get(server.url + "/openapi.json", timeout=30).status_code == 404


@pytest.mark.parametrize("name", ["..", ".", "x" * 300 + ".png", "../../"])
def test_bad_filenames_are_400(server, name):
    r = httpx.post(
        server.url + "/v1/extract", files={"file": (name, b"\x89PNG\r\n\x1a\n", "image/png")}, headers=auth(), timeout=30
    )
    assert r.status_code == 400 and "filename" in r.json()["detail"]


def test_no_exception_text_reaches_a_client(server, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal path /srv/bank/db.sqlite")

    monkeypatch.setattr(server.backend, "stats", boom)
    r = httpx.get(server.url + "/health", timeout=30)
    assert r.json()["status"] == "degraded" and "secret" not in r.text


# --- 7. indexing processes -------------------------------------------------------------------


def test_a_second_index_run_on_the_same_home_says_busy(tmp_path, docteller_home):
    from docteller.processes import index_write_lock
    from docteller.settings import get_settings

    doc = tmp_path / "a.md"
    doc.write_text("# A\nText.\n")
    # A narrow terminal: the message, which names the home's path, is still one line (a wrapped
    # one breaks the path and whatever greps the log).
    env = {**os.environ, "DOCTELLER_HOME": str(docteller_home), "COLUMNS": "40"}
    with index_write_lock(get_settings()):
        run = subprocess.run(
            [sys.executable, "-m", "docteller.cli", "index", str(doc), "--no-wait"],
            env=env, capture_output=True, text=True, timeout=300,
        )
    assert run.returncode == 3
    assert f"busy: {docteller_home}: another indexing run is writing to this knowledge base" in run.stderr


def test_index_workers_end_when_the_parent_is_killed(tmp_path, corpus):
    import psutil

    folder = tmp_path / "docs"
    folder.mkdir()
    statute = (corpus / "kb/us_code/truth_in_savings_12usc4301.md").read_text(encoding="utf-8")
    for i in range(8):
        (folder / f"copy{i}.md").write_text(statute + f"\n\nCopy {i}.\n", encoding="utf-8")
    env = {**os.environ, "DOCTELLER_HOME": str(tmp_path / "home"), "DOCTELLER_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "docteller.cli", "index", str(folder)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 180
        children: list = []
        while time.monotonic() < deadline and proc.poll() is None:
            children = [c for c in parent.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
            if len(children) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(children) >= 2, "the index run ended before its workers were seen"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"workers outlived their parent: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_cancelled_web_turn_stops_generating(server, model):
    model.stopped_early.clear()
    client = gradio_client(server)
    started = model.generations
    job = client.submit({"text": "What is the overdraft fee? SLOW", "files": []}, api_name="/chat")
    deadline = time.monotonic() + 60
    while model.generations == started and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert not model.stopped_early.is_set()
    job.cancel()  # what a closed tab or a stop button does to the event
    assert model.stopped_early.wait(10), "generation went on after the web client cancelled"


def test_two_customers_uploading_the_same_bytes_each_keep_their_copy(tmp_path):
    """Gradio stores identical uploads once (a content-hash folder): two customers who attach the
    same file hold one cached path. The first to finish reading it must not delete it from under
    the other (it did: "Sorry, I can't find … any more"), and it goes when the last lets go."""
    from ui.security import FileOwnership

    cached = tmp_path / "3f9a0c" / "statement.pdf"
    cached.parent.mkdir()
    cached.write_bytes(b"%PDF-1.7 the same statement")
    ownership = FileOwnership()
    ownership.claim("alice", cached)
    ownership.claim("bob", cached)
    assert ownership.owns("alice", cached) and ownership.owns("bob", cached)
    assert not ownership.owns("mallory", cached) and not ownership.owns(None, cached)
    ownership.release_file("alice", cached)  # alice's turn read it
    assert cached.is_file() and ownership.owns("bob", cached) and not ownership.owns("alice", cached)
    ownership.release_session("bob")  # bob's tab closed before his turn
    assert not cached.exists() and not cached.parent.exists()
