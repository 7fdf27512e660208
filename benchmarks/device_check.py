"""The GPU path, measured on a GPU machine that has no network, in under 8 minutes.

    python benchmarks/device_check.py                 # on the GPU machine (see "Carried wheels")
    python benchmarks/device_check.py --smoke         # same code on a CPU, tiny sizes (CI runs this)

What it prints (and writes as JSON to --out):
1. The VLM path: a full-size random-weight SmolVLM (Idefics3, ~2.2B parameters, SmolVLM-Instruct's
   shapes) is built from a config on the GPU, saved, and loaded through docteller's own
   `TransformersVlmChatModel` -- 4-bit NF4 via bitsandbytes when CUDA is there. Load time, VRAM after
   load and peak, prefill time of one statement-sized page image (its image-token count), decode
   tokens/s, and a streamed reply through `ChatModel.stream` (the serving path).
2. Vector search at 1M x 384 (MiniLM's width): docteller's `FaissVectorIndex` (flat, exact) on the
   CPU against the same search on the GPU -- faiss-gpu when importable, else an exact torch
   matmul + top-k on CUDA (what faiss-gpu's flat index computes). Queries/s and top-10 agreement.

Carried wheels: the GPU image has torch, transformers and accelerate; bitsandbytes (repacked with
only its CUDA 13 libraries, 7 MiB), faiss-cpu (18 MiB) and pydantic travel as wheels made by
`scripts/device_wheels.sh` (28 MiB together, under the 64 MiB a call may carry). faiss-gpu does not
fit: its wheels are 129 MiB (faiss-gpu) or 46 MiB plus CUDA 12 runtime wheels (faiss-gpu-cu12),
and the image's torch is built for CUDA 13; so the GPU side of item 2 is torch unless faiss-gpu is
already installed where this runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 384
TOP_K = 10


def _environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for name in ("transformers", "accelerate", "bitsandbytes", "faiss"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as exc:  # reported, not fatal: the check says what it could not measure
            info[name] = f"missing ({type(exc).__name__})"
    return info


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


def _page_image(long_edge: int):
    """A statement-like page: white A4 proportions with rows of text (content is irrelevant to timing)."""
    from PIL import Image, ImageDraw

    width, height = int(long_edge * 0.707), long_edge
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for row, y in enumerate(range(40, height - 40, max(12, height // 60))):
        draw.text((30, y), f"2026-11-{row % 28 + 1:02d}  CARD PAYMENT {row:04d}   -{row * 3.17:8.2f}", fill="black")
    return page


def check_vlm(work: Path, smoke: bool) -> dict:
    import torch

    from agent.backends.random_checkpoint import SMOLVLM_2B, TINY, build_random_idefics3
    from agent.backends.transformers_vlm import TransformersVlmChatModel
    from docteller.protocols import ChatMessage

    cuda = torch.cuda.is_available()
    shape = TINY if smoke else SMOLVLM_2B
    started = time.perf_counter()
    model_dir = build_random_idefics3(work / "vlm", shape, device="cuda" if cuda else "cpu")
    built_s = time.perf_counter() - started
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    chat = TransformersVlmChatModel(model_dir)  # 4-bit NF4 whenever CUDA is available
    _sync()
    result: dict = {
        "shape": "tiny" if smoke else "smolvlm-2.2b",
        "parameters_m": round(chat.model.num_parameters() / 1e6, 2),  # counts 4-bit packed weights whole
        "build_and_save_s": round(built_s, 1),
        "load_s": round(time.perf_counter() - started, 2),
        "quantized_4bit_nf4": chat.quantized,
    }
    if cuda:
        result["vram_after_load_gib"] = _gib(torch.cuda.memory_allocated())
    page = [ChatMessage("user", "What is the closing balance on this statement page?",
                        images=[_page_image(shape.longest_edge)])]
    inputs = chat._inputs(page)
    with torch.inference_mode():
        chat.model(**inputs)  # warm-up: kernels, allocator
        _sync()
        started = time.perf_counter()
        chat.model(**inputs)
        _sync()
        result["image_prefill_s"] = round(time.perf_counter() - started, 3)
    result["image_prompt_tokens"] = chat.last_usage["prompt_tokens"]
    result["image_tiles"] = chat.last_usage["pixel_values"][1] if chat.last_usage["pixel_values"] else 0
    result.update(_decode_rate(chat, new_tokens=16 if smoke else 128))
    started = time.perf_counter()
    pieces = list(chat.stream(page, max_tokens=8 if smoke else 32))
    result["stream_pieces"] = len(pieces)
    result["stream_with_image_s"] = round(time.perf_counter() - started, 2)
    if cuda:
        result["vram_peak_gib"] = _gib(torch.cuda.max_memory_allocated())
    del chat
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def _decode_rate(chat, new_tokens: int) -> dict:
    """Tokens/s of greedy decoding after a short text prompt (random weights never stop early)."""
    import torch

    from docteller.protocols import ChatMessage

    inputs = chat._inputs([ChatMessage("user", "your statement balance is ?")])
    with torch.inference_mode():
        chat.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        _sync()
        started = time.perf_counter()
        out = chat.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        _sync()
    elapsed = time.perf_counter() - started
    generated = int(out.shape[-1] - inputs["input_ids"].shape[-1])
    return {"decode_tokens": generated, "decode_tokens_per_s": round(generated / elapsed, 1)}


def _unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _gpu_search(vectors: np.ndarray, queries: np.ndarray) -> tuple[str, np.ndarray, float]:
    """(engine, ids, seconds) of an exact top-k on the GPU; torch on the CPU in --smoke without CUDA."""
    import torch

    try:
        import faiss

        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            resources = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatIP(resources, DIM)
            index.add(vectors)
            index.search(queries[:8], TOP_K)  # warm-up
            started = time.perf_counter()
            _, ids = index.search(queries, TOP_K)
            return "faiss-gpu GpuIndexFlatIP", ids, time.perf_counter() - started
    except ImportError:
        pass
    device = "cuda" if torch.cuda.is_available() else "cpu"
    matrix = torch.from_numpy(vectors).to(device)
    asked = torch.from_numpy(queries).to(device)
    torch.topk(asked[:8] @ matrix.T, TOP_K)  # warm-up
    _sync()
    started = time.perf_counter()
    ids = torch.cat([torch.topk(batch @ matrix.T, TOP_K).indices for batch in asked.split(256)]).cpu().numpy()
    _sync()
    return f"torch exact matmul+topk ({device})", ids, time.perf_counter() - started


def check_search(n_vectors: int, n_queries: int) -> dict:
    from retrieval.vector import FaissVectorIndex

    vectors = _unit_vectors(n_vectors, seed=1)
    queries = _unit_vectors(n_queries, seed=2)
    started = time.perf_counter()
    index = FaissVectorIndex(DIM, hnsw_threshold=n_vectors + 1, use_gpu=False)  # exact flat search
    index.add(np.arange(n_vectors, dtype=np.int64), vectors)
    add_s = time.perf_counter() - started
    index.search(queries[:8], TOP_K)
    started = time.perf_counter()
    _, cpu_ids = index.search(queries, TOP_K)
    cpu_s = time.perf_counter() - started
    engine, gpu_ids, gpu_s = _gpu_search(vectors, queries)
    agreement = float(np.mean([len(set(a) & set(b)) / TOP_K for a, b in zip(cpu_ids, gpu_ids)]))
    return {
        "vectors": n_vectors, "dim": DIM, "queries": n_queries, "k": TOP_K,
        "cpu_engine": "docteller FaissVectorIndex (faiss-cpu IndexFlatIP)",
        "cpu_add_s": round(add_s, 2), "cpu_queries_per_s": round(n_queries / cpu_s, 1),
        "gpu_engine": engine, "gpu_queries_per_s": round(n_queries / gpu_s, 1),
        "gpu_over_cpu": round(cpu_s / gpu_s, 1), "top10_agreement": round(agreement, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and 20k vectors: the code path on a CPU")
    parser.add_argument("--vectors", type=int, default=None, help="vectors in the search check (default 1M)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-vlm", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default $OUT or artifacts/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = args.out or Path(os.environ.get("OUT") or ROOT / "artifacts") / "device_check.json"
    report: dict = {"environment": _environment(), "smoke": args.smoke}
    print(json.dumps(report["environment"]), flush=True)
    if not args.skip_vlm:
        with tempfile.TemporaryDirectory(prefix="device-check-") as work:
            report["vlm"] = check_vlm(Path(work), args.smoke)
        print("vlm", json.dumps(report["vlm"]), flush=True)
    n_vectors = args.vectors or (20_000 if args.smoke else 1_000_000)
    report["search"] = check_search(n_vectors, min(args.queries, 200) if args.smoke else args.queries)
    print("search", json.dumps(report["search"]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
