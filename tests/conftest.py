"""Shared test setup: offline environment, an isolated DOCTELLER_HOME, the shared corpus."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from docteller.protocols import ChatMessage
    from retrieval.store import KnowledgeIndex

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_k] = _v

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CORPUS = (PROJECT_ROOT.parent / "shared" / "corpus").resolve()
KB_DIR = PROJECT_ROOT / "knowledge_base"
ARTIFACTS = PROJECT_ROOT / "artifacts"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """`../shared/corpus`: real documents with ground truth (never copied into the project)."""
    if not CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared corpus missing at {CORPUS}")
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture()
def docteller_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir for one test; settings are re-read from the environment."""
    from docteller.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("DOCTELLER_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


AGREEMENT = "kb/bank_tc_pdfs/bank_of_america_online_banking_service_agreement_2025-07-21.pdf"


def _make_bad_files(folder: Path, corpus: Path) -> dict[str, str]:
    """Bad inputs of every kind; returns {file name: expected reason fragment}."""
    import pymupdf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.pdf").write_bytes(b"")
    good = (corpus / AGREEMENT).read_bytes()
    (folder / "truncated.pdf").write_bytes(good[:1500])
    pdf = pymupdf.open()
    pdf.new_page().insert_text((72, 72), "secret")
    pdf.save(folder / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="o", user_pw="u")
    pdf.close()
    (folder / "archive.bin").write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 200)
    (folder / "notes.pdf").write_text("just some text, not a PDF at all\n")
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")
    big = pymupdf.open()
    for _ in range(2000):
        big.new_page(width=200, height=200)
    big.save(folder / "huge.pdf")
    big.close()
    return {
        "empty.pdf": "empty file",
        "truncated.pdf": "truncated",
        "locked.pdf": "encrypted",
        "archive.bin": "unsupported file type",
        "notes.pdf": "unsupported file type",
        "bomb.png": "decompression bomb",
        "huge.pdf": "too many pages (2000 > limit",
    }


# The agreement's pages the indexing tests keep (first, last; 1-based): the wire-transfer fee
# table (page 16, continued on 17) and the alerts' text-message short codes (page 22) among them.
AGREEMENT_EXCERPT_PAGES = (15, 22)


def _excerpt_page(page: int) -> int:
    first, last = AGREEMENT_EXCERPT_PAGES
    assert first <= page <= last, f"page {page} is not in the excerpt"
    return page - first + 1


@pytest.fixture(scope="session")
def bundled_kb_index() -> Callable[..., "KnowledgeIndex"]:
    """`bundled_kb_index(*names)`: an in-memory index of those files of the bundled KB, with the
    real embedder (the agent tests' KB)."""

    def build(*names: str) -> "KnowledgeIndex":
        from docteller.settings import DEFAULT_KB_DIR
        from ingest.embed import get_embedder
        from ingest.loaders import load_document
        from retrieval.store import KnowledgeIndex

        index = KnowledgeIndex.in_memory(embedder=get_embedder())
        for name in names:
            index.add_document(load_document(DEFAULT_KB_DIR / name))
        return index

    return build


@pytest.fixture(scope="session")
def excerpt_page() -> Callable[[int], int]:
    """`excerpt_page(n)`: the page number in `agreement_excerpt` of the whole agreement's page n."""
    return _excerpt_page


@pytest.fixture(scope="session")
def agreement_excerpt(tmp_path_factory, corpus: Path) -> Path:
    """Pages 15-22 of the real 29-page agreement PDF, as one PDF (copied page by page, text layer
    and all): what the indexing tests search, at a quarter of the parsing and embedding."""
    import pymupdf

    path = tmp_path_factory.mktemp("agreement") / "agreement.pdf"
    first, last = AGREEMENT_EXCERPT_PAGES
    with pymupdf.open(corpus / AGREEMENT) as whole, pymupdf.open() as excerpt:
        excerpt.insert_pdf(whole, from_page=first - 1, to_page=last - 1)
        excerpt.save(path)
    return path


@pytest.fixture(scope="session")
def make_bad_files(corpus: Path) -> Callable[[Path], dict[str, str]]:
    """`make_bad_files(folder)`: writes bad inputs of every kind (empty, truncated, encrypted,
    unsupported, a decompression bomb, too many pages) into `folder`; returns {file name:
    expected reason fragment}. Used by the loader's tests and the indexing pipeline's."""
    return lambda folder: _make_bad_files(folder, corpus)


class ScriptedModel:
    """A ChatModel whose reply is computed from the prompt; it records every prompt it gets."""

    model_id = "scripted-test-model"
    model_hash = "0" * 64

    def __init__(self, reply: Callable[[Sequence[ChatMessage]], str]) -> None:
        self.reply = reply
        self.calls: list[list[ChatMessage]] = []

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0) -> Iterator[str]:
        self.calls.append(list(messages))
        for word in re.findall(r"\S+\s*", self.reply(messages)):
            yield word

    @property
    def prompts(self) -> str:
        return "\n".join(m.content for call in self.calls for m in call)


@pytest.fixture(scope="session")
def scripted_model() -> type[ScriptedModel]:
    """`scripted_model(reply)`: a `ChatModel` whose reply is computed from the prompt and that
    records every prompt it gets (the agent's, UI's and publisher tests' stand-in model)."""
    return ScriptedModel


@pytest.fixture()
def two_chunks_of_one_page():
    """An answer citing two chunks of page 3 and one of page 1 of one document (the agent keeps
    every chunk's citation; lists of sources name each page once)."""
    from agent.pipeline.types import Answer
    from docteller.model import Citation

    fees = dict(doc_id="d1", title="Schedule of Fees", page=3)
    return Answer(
        question="q",
        answer="a",
        citations=[Citation(chunk_id="c1", **fees), Citation(chunk_id="c2", **fees),
                   Citation(chunk_id="c3", doc_id="d1", title="Schedule of Fees", page=1)],
    )
