"""The README's promises that code can check: its configuration table lists every setting (name
and default) and nothing else, its quick-start commands exist, and the pages it links to are there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from docteller.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
# Defaults computed on the machine it runs on: the README says what they are computed from.
COMPUTED = {"home", "workers", "llm_threads"}


def readme_settings() -> dict[str, tuple[str, str]]:
    """{field name: (default cell, meaning cell)} from the Configuration table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `DOCTELLER_([A-Z0-9_]+)` \| (.+?) \| (.+?) \|", line.strip())
        if match:
            name = match.group(1).lower()
            assert name not in rows, f"DOCTELLER_{match.group(1)} is listed twice"
            rows[name] = (match.group(2), match.group(3))
    return rows


def documented_default(value: object) -> str:
    """A default as the README writes it: `value`, or "unset" for None or an empty string."""
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value.relative_to(PROJECT_ROOT).as_posix()}`"
    return f"`{value}`"


def test_the_configuration_table_lists_every_setting_and_nothing_else() -> None:
    rows = readme_settings()
    assert len(rows) >= 40  # the table was found and parsed
    assert sorted(rows) == sorted(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_each_settings_default_is_the_documented_one(name: str) -> None:
    default_cell, meaning = readme_settings()[name]
    field = Settings.model_fields[name]
    assert meaning.strip() and default_cell.strip()
    if name in COMPUTED:
        assert field.default is PydanticUndefined and field.default_factory is not None
        return
    assert field.default_factory is None, f"{name}: a computed default, add it to COMPUTED with a README note"
    # "unset (API off)": the cell starts with the value and may say what it means.
    assert default_cell.split(" (")[0] == documented_default(field.default), name


def test_quick_start_commands_are_make_targets() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make serve" in quick and "make test" in quick
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^serve: setup\n\t\$\(BIN\)/docteller serve$", makefile, re.M)
    assert re.search(r"^test: setup\n\t\$\(BIN\)/python -m pytest -q$", makefile, re.M)


def test_linked_files_exist() -> None:
    text = README.read_text(encoding="utf-8")
    targets = set(re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)) | set(re.findall(r'src="([^"]+)"', text))
    local = {t for t in targets if not t.startswith("http")}
    assert {"SECURITY.md", "docs/design.md", "docs/evaluation.md"} <= local
    assert [t for t in sorted(local) if not (PROJECT_ROOT / t).exists()] == []
