"""The non-default backends end to end: a real llama.cpp OpenAI-compatible server on 127.0.0.1
(SmolLM2-135M), and a tiny random-weight Idefics3 VLM built on the fly and run on the CPU."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from docteller.protocols import ChatMessage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] extras not installed")
    from agent.model_files import smollm2_path

    port = _free_port()
    # llama.cpp logs ~200 kB while loading: a file, not a pipe nobody drains (that would block it).
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "1024", "--n_threads", "2"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("llama_cpp.server did not come up within 120 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


MESSAGES = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Name three colours."),
]


def test_openai_backend_streams_and_completes_against_a_real_server(llama_server: str, docteller_home: Path, monkeypatch) -> None:
    from agent.backends import get_chat_model
    from agent.backends.openai_http import OpenAIHttpChatModel
    from docteller.settings import get_settings

    monkeypatch.setenv("DOCTELLER_LLM_BACKEND", "openai")
    monkeypatch.setenv("DOCTELLER_OPENAI_BASE_URL", llama_server)
    get_settings.cache_clear()
    model = get_chat_model()
    assert isinstance(model, OpenAIHttpChatModel) and llama_server in model.model_id
    pieces = list(model.stream(MESSAGES, max_tokens=24))
    assert len(pieces) > 1, "streaming should deliver several server-sent events"
    assert "".join(pieces).strip()
    whole = OpenAIHttpChatModel(llama_server, use_stream=False).complete(MESSAGES, max_tokens=24)
    assert whole.strip()


JUDGE = [ChatMessage("system", "Reply yes or no."), ChatMessage("user", "Is the sky blue on a clear day?")]
# The same question worded so that SmolLM2's greedy reply is one of the choices ("no."), which
# JUDGE's is not ("the answer to"): a comparison with greedy decoding needs a reply to compare.
ONE_WORD = [ChatMessage("system", "Answer with one word: yes or no."), ChatMessage("user", "Is the sky blue on a clear day?")]


def test_openai_backend_judges_from_server_logprobs(llama_server: str) -> None:
    import math

    from agent.backends.openai_http import OpenAIHttpChatModel

    real = OpenAIHttpChatModel(llama_server, retries=0)
    judged = real.choice_probabilities(JUDGE, ("yes", "no"))
    assert real._serves_logprobs is True and sum(judged.values()) == pytest.approx(1.0)
    # Greedy decoding takes the more likely first token: the choice it starts with is the likelier.
    reply = real.complete(ONE_WORD, max_tokens=3).strip().lower()
    chosen = next((choice for choice in ("yes", "no") if reply.startswith(choice)), None)
    assert chosen is not None, reply
    assert real.choice_probabilities(ONE_WORD, ("yes", "no"))[chosen] > 0.5

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.read())["logprobs"] is True
        top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": " no", "logprob": math.log(0.2)},
               {"token": "maybe", "logprob": math.log(0.2)}]
        return httpx.Response(200, json={"choices": [{"message": {"content": "Yes"},
                                                      "logprobs": {"content": [{"token": "Yes", "top_logprobs": top}]}}]})

    served = OpenAIHttpChatModel("http://test/v1", transport=httpx.MockTransport(handler))
    probabilities = served.choice_probabilities(JUDGE, ("yes", "no"))
    assert probabilities["yes"] == pytest.approx(0.75) and probabilities["no"] == pytest.approx(0.25)


@pytest.mark.parametrize(("reply", "expected"), [("No, it is not.", {"yes": 0.0, "no": 1.0}), ("Perhaps", {"yes": 0.0, "no": 0.0})])
def test_openai_backend_without_logprobs_judges_from_a_short_reply(reply: str, expected: dict) -> None:
    from agent.backends.openai_http import OpenAIHttpChatModel

    requests: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(json.loads(request.read()))
        return httpx.Response(200, json={"choices": [{"message": {"content": reply}}]})

    model = OpenAIHttpChatModel("http://test/v1", transport=httpx.MockTransport(handler))
    assert model.choice_probabilities(JUDGE, ("yes", "no")) == expected
    assert model.choice_probabilities(JUDGE, ("yes", "no")) == expected
    # Asked for logprobs once; then it remembers the server has none and only asks for a reply.
    assert ["logprobs" in r for r in requests] == [True, False, False]


def test_openai_backend_judging_survives_a_busy_server_and_a_refusal() -> None:
    import math

    from agent.backends.openai_http import OpenAIHttpChatModel

    calls = {"n": 0}

    def busy_then_logprobs(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, text="loading model")
        top = [{"token": "no", "logprob": math.log(0.9)}, {"token": "yes", "logprob": math.log(0.1)}]
        return httpx.Response(200, json={"choices": [{"message": {"content": "no"},
                                                      "logprobs": {"content": [{"token": "no", "top_logprobs": top}]}}]})

    busy = OpenAIHttpChatModel("http://test/v1", backoff=0.01, transport=httpx.MockTransport(busy_then_logprobs))
    assert busy.choice_probabilities(JUDGE, ("yes", "no"))["no"] == pytest.approx(0.9)
    assert busy._serves_logprobs is True and calls["n"] == 3  # a busy server is not taken for one without logprobs

    def refuses_logprobs(request: httpx.Request) -> httpx.Response:
        if json.loads(request.read()).get("logprobs"):
            return httpx.Response(400, json={"error": "logprobs not supported"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "Yes."}}]})

    refusing = OpenAIHttpChatModel("http://test/v1", transport=httpx.MockTransport(refuses_logprobs))
    assert refusing.choice_probabilities(JUDGE, ("yes", "no")) == {"yes": 1.0, "no": 0.0}
    assert refusing._serves_logprobs is False


def test_llamacpp_choice_probabilities_agree_with_greedy_generation() -> None:
    pytest.importorskip("llama_cpp")
    from agent.backends.llamacpp import LlamaCppChatModel
    from agent.model_files import smollm2_path

    model = LlamaCppChatModel(smollm2_path(), model_id="smollm2", model_hash="x", n_ctx=512, n_threads=2)
    choices = ("yes", "no")
    first = model.choice_probabilities(JUDGE, choices)
    assert set(first) == set(choices) and sum(first.values()) == pytest.approx(1.0)
    assert 0.0 < first["yes"] < 1.0  # a distribution, not a hard answer
    # A generation in between (another prompt) must not disturb the cached state it reuses.
    "".join(model.stream(MESSAGES, max_tokens=4))
    again = model.choice_probabilities(JUDGE, choices)
    assert again["yes"] == pytest.approx(first["yes"], abs=1e-3)
    # Warming up leaves the judge's system policy in the KV cache, where the next judgement finds it.
    from agent.prompt import JUDGE_POLICY
    from agent.pipeline.judge import judge_probability

    judge_probability(model, "warm-up", ["warm-up"])
    policy_tokens = model.llm.tokenize(JUDGE_POLICY.encode(), add_bos=False, special=False)
    cached = model.llm.input_ids[: model.llm.n_tokens].tolist()
    assert any(cached[i : i + 20] == policy_tokens[:20] for i in range(0, 10))
    # Greedy decoding takes the most likely first token: the choice it starts with is the one
    # with the higher probability.
    reply = "".join(model.stream(ONE_WORD, max_tokens=2)).strip().lower()
    chosen = next((choice for choice in choices if reply.startswith(choice)), None)
    assert chosen is not None, reply
    assert model.choice_probabilities(ONE_WORD, choices)[chosen] > 0.5


def test_llamacpp_restores_a_long_system_prompt_evicted_by_another_prompt(monkeypatch) -> None:
    pytest.importorskip("llama_cpp")
    from agent.backends.llamacpp import LlamaCppChatModel
    from agent.model_files import smollm2_path
    from agent.prompt import build_judge_messages, build_rewrite_messages

    model = LlamaCppChatModel(smollm2_path(), model_id="smollm2", model_hash="x", n_ctx=1024, n_threads=2)
    loads = []
    original = model.llm.load_state
    monkeypatch.setattr(model.llm, "load_state", lambda state: loads.append(state) or original(state))
    # A long fixed policy (the judge's is short since it lost its examples; a bank's own may not be).
    policy = " ".join(["Answer yes only if the lines state the answer to the customer's question."] * 12)

    def judged(question: str, line: str) -> list:
        messages = build_judge_messages(question, [line])
        return [ChatMessage("system", policy), *messages[1:]]

    judge = judged("what does a cashier's check cost", "Service: Cashier's check; Fee: $10")
    first = model.choice_probabilities(judge, ("yes", "no"))
    assert len(model._system_states) == 1  # the policy is long enough to keep
    # A follow-up's query rewrite (a short system prompt: not kept) replaces the KV cache...
    "".join(model.stream(build_rewrite_messages("and at a branch?", [("wire fee?", "It is $25 online.")]), max_tokens=8))
    assert len(model._system_states) == 1 and loads == []
    # ...and the next judgement restores the judge's policy instead of evaluating it again.
    again = model.choice_probabilities(judged("and a money order?", "Service: Money order; Fee: $5"), ("yes", "no"))
    assert len(loads) == 1 and 0.0 < again["yes"] < 1.0
    assert model.choice_probabilities(judge, ("yes", "no"))["yes"] == pytest.approx(first["yes"], abs=1e-4)
    assert len(loads) == 1  # the cache already held it: nothing to restore


def test_openai_backend_reports_a_down_server_clearly_after_retries() -> None:
    from agent.backends.openai_http import ChatServerError, OpenAIHttpChatModel

    model = OpenAIHttpChatModel(f"http://127.0.0.1:{_free_port()}/v1", retries=2, backoff=0.05, connect_timeout=1)
    start = time.monotonic()
    with pytest.raises(ChatServerError, match=r"unreachable.*after 3 attempt"):
        list(model.stream(MESSAGES))
    assert time.monotonic() - start >= 0.15  # backed off 0.05 + 0.1 s between attempts


def test_openai_backend_retries_5xx_then_succeeds() -> None:
    from agent.backends.openai_http import OpenAIHttpChatModel

    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, text="loading model")
        body = (
            'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
            'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
            "data: [DONE]\n\n"
        )
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    model = OpenAIHttpChatModel("http://test/v1", backoff=0.01, transport=httpx.MockTransport(handler))
    assert "".join(model.stream(MESSAGES)) == "Hello" and calls["n"] == 3


# --- tiny Idefics3 VLM ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """A random-weight Idefics3 checkpoint with a locally built tokenizer, saved like a real one."""
    from agent.backends.random_checkpoint import TINY, build_random_idefics3

    return build_random_idefics3(tmp_path_factory.mktemp("tiny-idefics3"), TINY)


def test_tiny_vlm_streams_with_an_image_on_cpu(tiny_vlm_dir: Path, docteller_home: Path, monkeypatch) -> None:
    from PIL import Image

    from agent.backends import get_chat_model
    from agent.backends.transformers_vlm import TransformersVlmChatModel
    from docteller.settings import get_settings

    monkeypatch.setenv("DOCTELLER_LLM_BACKEND", "transformers")
    monkeypatch.setenv("DOCTELLER_VLM_PATH", str(tiny_vlm_dir))
    get_settings.cache_clear()
    model = get_chat_model()
    assert isinstance(model, TransformersVlmChatModel) and not model.quantized  # no CUDA here
    assert len(model.model_hash) == 64
    page = Image.new("RGB", (48, 40), "white")
    messages = [
        ChatMessage("system", "the assistant"),
        ChatMessage("user", "your passport expires on page ?", images=[page]),
    ]
    pieces = list(model.stream(messages, max_tokens=6))
    assert 1 <= len(pieces) <= 6  # random weights: any words, but streamed piece by piece
    assert model.last_usage["images"] == 1 and model.last_usage["pixel_values"][0] == 1
    assert model.last_usage["prompt_tokens"] > 4  # the <image> placeholders were expanded
    assert list(model.stream([ChatMessage("user", "the fee is ?")], max_tokens=4))  # text-only turn too
    judged = model.choice_probabilities(messages, ("yes", "no"))  # one forward pass, with the image
    assert set(judged) == {"yes", "no"} and sum(judged.values()) == pytest.approx(1.0)


def test_vlm_directory_errors_are_clear(tmp_path: Path) -> None:
    from agent.backends.transformers_vlm import TransformersVlmChatModel, VlmLoadError

    with pytest.raises(VlmLoadError, match="no config.json"):
        TransformersVlmChatModel(tmp_path)
