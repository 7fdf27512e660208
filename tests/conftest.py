"""Shared test setup: offline environment, an isolated DOCTELLER_HOME, the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
