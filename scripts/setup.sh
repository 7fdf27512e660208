#!/usr/bin/env bash
# Installs docteller and everything it needs into ./.venv (idempotent; `make` calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Chromium for the browser tests, tesseract as the optional second OCR engine,
# HAProxy as the sticky load balancer in front of several app processes (deploy/haproxy.cfg).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! command -v chromium >/dev/null 2>&1 || ! command -v tesseract >/dev/null 2>&1 \
     || ! command -v haproxy >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium tesseract-ocr haproxy >/dev/null
  fi
else
  echo "setup: not root or no apt-get; install chromium, tesseract-ocr and haproxy yourself" >&2
fi

PY=${PY:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# llama-cpp-python compiles from source (~8 min on 2 cores) the first time; pip caches the wheel.
# On x86 it is built for x86-64-v3 (AVX2, FMA, F16C), not -march=native: a native build on a
# Sapphire Rapids machine uses llama.cpp's AMX kernels, which segfault at the first decode on some
# VMs (seen here; ggml-org/llama.cpp#20824), and one build then suits every x86 machine CI lands on.
if [ "$(uname -m)" = x86_64 ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
# torch==2.13.0 first, in the same command: otherwise pip resolves a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0 -e '.[cpu,dev,ray]'
# A wheel pip cached from an earlier native build would be reused as is: drop it and rebuild once.
if .venv/bin/python -c "import llama_cpp, sys; sys.exit('AMX_INT8 = 1' not in llama_cpp.llama_print_system_info().decode())" 2>/dev/null; then
  echo "setup: rebuilding llama-cpp-python without AMX kernels" >&2
  .venv/bin/pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
  .venv/bin/pip install -q --force-reinstall --no-deps "llama-cpp-python==$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi
