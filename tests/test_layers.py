"""The packages form layers, each importing only from the ones below it:

    docteller (model, settings, protocols) ← ingest ← retrieval ← agent ← ui

Read statically (`ast`), so an import inside a function counts as much as one at the top of a
module: a lazy import upward still ties the lower layer to the upper one. Tests named after a
layer (`test_agent_*.py`, ...) keep to that layer too, so a test of the agent fails only when the
agent does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("docteller", "ingest", "retrieval", "agent", "ui")
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# Test modules by file-name prefix: the layer whose behaviour they test.
TEST_LAYERS = {
    "test_loaders": "ingest",
    "test_pages": "ingest",
    "test_chunking": "ingest",
    "test_ocr": "ingest",
    "test_extract": "ingest",
    "test_retrieval": "retrieval",
    "test_index": "retrieval",
    "test_agent": "agent",
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in the file, wherever it sits."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def upward_imports(path: Path, layer: str, root: Path = ROOT) -> list[str]:
    """'file:line imports module' for each import of a layer above `layer`."""
    rel = path.relative_to(root).as_posix()
    return [
        f"{rel}:{line} imports {module}"
        for line, module in imported_modules(path)
        if RANK.get(module.split(".")[0], -1) > RANK[layer]
    ]


def package_modules() -> list[tuple[Path, str]]:
    return [(path, layer) for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]


def layered_tests() -> list[tuple[Path, str]]:
    tests = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        layer = next((layer for prefix, layer in TEST_LAYERS.items() if path.stem.startswith(prefix)), None)
        if layer is not None:
            tests.append((path, layer))
    return tests


def test_every_layer_holds_modules() -> None:
    """The check below must see the code: a moved package would make it pass on nothing."""
    counts = {layer: sum(1 for _, owner in package_modules() if owner == layer) for layer in LAYERS}
    assert all(count >= 3 for count in counts.values()), counts
    assert {layer for _, layer in layered_tests()} == {"ingest", "retrieval", "agent"}


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_higher_layer(layer: str) -> None:
    violations = [v for path, owner in package_modules() if owner == layer for v in upward_imports(path, owner)]
    assert violations == []


def test_no_layer_test_imports_a_higher_layer() -> None:
    violations = [v for path, layer in layered_tests() for v in upward_imports(path, layer)]
    assert violations == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    """The detector itself: a lazy import of the store from ingest is caught, a downward one is not."""
    module = tmp_path / "ingest" / "example.py"
    module.parent.mkdir()
    module.write_text(
        "from docteller.model import Document\n"
        "def f():\n"
        "    from retrieval.store import KnowledgeIndex\n"
        "    import agent.session, json\n"
    )
    assert upward_imports(module, "ingest", root=tmp_path) == [
        "ingest/example.py:3 imports retrieval.store",
        "ingest/example.py:4 imports agent.session",
    ]


def test_tests_share_helpers_through_conftest_only() -> None:
    """A test module importing another (or `conftest` by name) runs that module's tests' imports
    and ties the two together: shared helpers are conftest fixtures."""
    imports = [
        f"{path.name}:{line} imports {module}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in {"tests", "conftest"} or module.split(".")[0].startswith("test_")
    ]
    assert imports == []
