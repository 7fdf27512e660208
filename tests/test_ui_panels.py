"""The side panel after a turn: it shows what the turn produced, unless the customer has already
chosen what to look at (a tapped source must not be replaced by the panel update that follows the
answer: that update is a second event, and it can finish after the tap)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from docteller.settings import DEFAULT_KB_DIR, Settings

QUESTION = "What is the fee to reissue a card?"
SKIP = gr.skip()


@pytest.fixture(scope="module")
def chat(tmp_path_factory, scripted_model):
    from ui.backend import Backend
    from ui.chat import _ChatHandlers
    from ui.security import COOKIE_NAME

    kb = tmp_path_factory.mktemp("kb")
    (kb / "fee-schedule.pdf").write_bytes((DEFAULT_KB_DIR / "fee-schedule.pdf").read_bytes())
    settings = Settings(home=tmp_path_factory.mktemp("home"), kb_dir=kb, workers=1, answer_judge="lexical")
    backend = Backend(settings, chat_model=scripted_model(lambda messages: "yes"))
    backend.ensure_kb_indexed()
    _, cookie = backend.cookies.issue()
    request = SimpleNamespace(headers={"cookie": f"{COOKIE_NAME}={cookie}"})
    yield _ChatHandlers(backend), request
    backend.close()


def _turn(handlers, request) -> list[dict]:
    frames = list(handlers.respond({"text": QUESTION, "files": []}, request))
    transcript = frames[-1][1]
    assert transcript[-1].get("options"), transcript[-1]  # the answer cites, so sources can open
    return transcript[-1]["options"]


def test_after_a_turn_the_panel_shows_the_answers_sources(chat) -> None:
    handlers, request = chat
    _turn(handlers, request)
    *_, citation_image, caption, tab = handlers.after_turn(request)
    assert tab.selected == "sources"
    assert citation_image is not None and "Schedule of Fees" in caption


def test_a_source_tapped_before_the_panel_update_stays_open(chat) -> None:
    handlers, request = chat
    options = _turn(handlers, request)
    picked = handlers.open_option(SimpleNamespace(value=options[-1]["value"]), request)
    assert picked[-1].selected == "sources" and picked[1] is not None
    *docs, pick, citation_image, caption, tab = handlers.after_turn(request)
    # The tapped source, its page and the tab stay as the customer left them.
    assert [pick, citation_image, caption, tab] == [SKIP] * 4
    assert SKIP not in docs  # this turn's documents panel is still brought up to date
    # The next turn starts afresh: its panel update shows its own sources.
    _turn(handlers, request)
    assert handlers.after_turn(request)[-1].selected == "sources"


def test_a_panel_opened_before_the_update_stays_open(chat) -> None:
    handlers, request = chat
    _turn(handlers, request)
    assert handlers.open_panel("docs")(request).selected == "docs"
    assert handlers.after_turn(request)[-1] == SKIP
