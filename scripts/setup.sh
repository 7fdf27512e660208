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
# torch==2.13.0 first, in the same command: otherwise pip resolves a multi-GB CUDA build.
# llama-cpp-python compiles from source (~8 min on 2 cores) the first time; pip caches the wheel.
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/pip install -q torch==2.13.0 -e '.[cpu,dev,ray]'
