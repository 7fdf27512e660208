"""GGUF assembly from parts: atomic, sha256-verified, mismatches refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.model_files import (
    DEFAULT_MODEL_SHA256,
    ModelFileError,
    assemble_parts,
    packaged_part_paths,
    resolve_gguf,
    smollm2_path,
)


def _parts(tmp_path: Path, payloads: list[bytes]) -> list[Path]:
    paths = []
    for n, payload in enumerate(payloads, 1):
        p = tmp_path / f"part{n:02d}.bin"
        p.write_bytes(payload)
        paths.append(p)
    return paths


def test_parts_are_concatenated_in_order_and_verified(tmp_path: Path) -> None:
    payloads = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 7]
    expected = hashlib.sha256(b"".join(payloads)).hexdigest()
    target = tmp_path / "models" / "m.gguf"
    assert assemble_parts(_parts(tmp_path, payloads), target, expected) == target
    assert target.read_bytes() == b"".join(payloads)
    assert [p.name for p in target.parent.iterdir() if p.suffix == ".part"] == []
    # A second call reuses the verified file without rewriting it.
    mtime = target.stat().st_mtime_ns
    assemble_parts(_parts(tmp_path, payloads), target, expected)
    assert target.stat().st_mtime_ns == mtime


def test_checksum_mismatch_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    parts = _parts(tmp_path, [b"GGUF tampered", b"weights"])
    target = tmp_path / "models" / "m.gguf"
    with pytest.raises(ModelFileError, match="sha256"):
        assemble_parts(parts, target, DEFAULT_MODEL_SHA256)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file was removed


def test_corrupt_existing_file_is_replaced(tmp_path: Path) -> None:
    payloads = [b"GGUF good", b" model"]
    expected = hashlib.sha256(b"".join(payloads)).hexdigest()
    target = tmp_path / "m.gguf"
    target.write_bytes(b"GGUF half-written")
    assemble_parts(_parts(tmp_path, payloads), target, expected)
    assert target.read_bytes() == b"GGUF good model"


def test_the_22_packaged_parts_are_found_on_disk() -> None:
    parts = packaged_part_paths()
    assert len(parts) == 22
    assert parts[0].name == "part01.bin" and parts[-1].name == "part22.bin"
    assert parts[0].read_bytes()[:4] == b"GGUF"


def test_gguf_path_setting_is_checked(tmp_path: Path, docteller_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from docteller.settings import get_settings

    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"<html>not a model</html>")
    monkeypatch.setenv("DOCTELLER_GGUF_PATH", str(not_gguf))
    get_settings.cache_clear()
    with pytest.raises(ModelFileError, match="not a GGUF"):
        resolve_gguf()
    monkeypatch.setenv("DOCTELLER_GGUF_PATH", str(smollm2_path()))
    get_settings.cache_clear()
    path, model_id, sha = resolve_gguf()
    assert path == smollm2_path() and model_id.startswith("SmolLM2") and len(sha) == 64
