#!/usr/bin/env bash
# Wheels that benchmarks/device_check.py needs on the GPU machine beyond what its image has
# (torch, transformers, accelerate): bitsandbytes for 4-bit NF4, faiss-cpu for the CPU side of the
# search check, and pydantic for docteller's own model classes. The machine has no network and a
# call carries at most 64 MiB, so bitsandbytes is repacked with only its CUDA 13 libraries.
# Usage (in the repo root): bash scripts/device_wheels.sh   -> .whl/ (git-ignored via .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  bitsandbytes==0.50.2 faiss-cpu==1.15.1 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
  python-dotenv==1.2.4 annotated-types==0.8.0 typing-inspection==0.4.5
python3 - <<'PY'
"""Drop every bitsandbytes native library but CUDA 13's (and the CPU fallback) from the wheel."""
import pathlib, zipfile
wheel = next(pathlib.Path(".whl").glob("bitsandbytes-*.whl"))
keep = lambda name: not name.endswith(".so") or name.endswith(("_cpu.so", "_cuda130.so", "_cuda132.so"))
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if not keep(item.filename):
            continue
        data = src.read(item)
        if item.filename.endswith("/RECORD"):
            data = "".join(l for l in data.decode().splitlines(True) if keep(l.split(",")[0])).encode()
        dst.writestr(item, data)
slim.replace(wheel)
PY
du -ch .whl/* | tail -1
