"""benchmarks/device_check.py's code path on a CPU (--smoke): the GPU run uses the same functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_smoke_runs_the_vlm_and_search_paths(tmp_path: Path) -> None:
    out = tmp_path / "device_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--smoke", "--vectors", "3000",
         "--queries", "40", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["environment"]["cuda"] is False
    vlm = report["vlm"]
    assert vlm["shape"] == "tiny" and vlm["quantized_4bit_nf4"] is False  # NF4 needs CUDA
    assert vlm["image_prompt_tokens"] > 10  # the page image was expanded into image tokens
    assert vlm["decode_tokens"] == 16 and vlm["decode_tokens_per_s"] > 0
    assert vlm["stream_pieces"] >= 1
    search = report["search"]
    assert search["vectors"] == 3000 and search["queries"] == 40
    assert search["top10_agreement"] == 1.0  # both sides are exact searches over the same vectors
    assert search["cpu_queries_per_s"] > 0 and search["gpu_queries_per_s"] > 0
