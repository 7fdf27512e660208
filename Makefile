# Two commands on a fresh machine do all set-up:
#   make serve   -> installs everything, indexes the bundled bank KB, serves http://127.0.0.1:7860
#   make test    -> installs everything, runs the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup serve test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

serve: setup
	$(BIN)/docteller serve

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) artifacts .pytest_cache
