# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision first, pinned as a pair: a torchvision built for another torch does not import.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.searchcore-installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-slow test-all lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,export,report]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && $(abspath $(BIN))/searchcore plugins && $(abspath $(BIN))/searchcore space show \
		&& time $(abspath $(BIN))/searchcore search --name demo --workers 2

# Each part prints how long it took. `make test` runs everything but the long end-to-end cases
# (marked `slow`); `make test-slow` runs those, and .ci/run runs both, the fast ones first.
timed = @s=$$(date +%s); $(2); rc=$$?; echo "== $(1): $$(( $$(date +%s) - s )) s (exit $$rc)"; exit $$rc
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

test: $(STAMP)
	$(call timed,ruff,$(BIN)/ruff check searchcore plugins spaces tests examples benchmarks)
	$(call timed,lint-imports,$(BIN)/lint-imports)
	$(call timed,tests,$(PYTEST) -m "not slow")

test-slow: $(STAMP)
	$(call timed,slow tests,$(PYTEST) -m slow)

test-all: test test-slow

# SECTIONS="overhead bookkeeping" re-measures some sections and keeps the others' figures
ONLY = $(if $(SECTIONS),--only $(SECTIONS))

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(ONLY) --out benchmarks/results.json --md benchmarks/RESULTS.md

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick $(ONLY) --out benchmarks/results-quick.json --md benchmarks/RESULTS-quick.md

lint: $(STAMP)
	$(BIN)/ruff check searchcore plugins spaces tests examples benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf runs mlruns mlartifacts mlflow.db searchcore.db searchcore.journal* ray_results
