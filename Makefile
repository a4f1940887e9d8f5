# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision first, pinned as a pair: a torchvision built for another torch does not import.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.searchcore-installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench bench-quick clean

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

test: $(STAMP)
	$(BIN)/ruff check searchcore plugins spaces tests examples benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --out benchmarks/results.json --md benchmarks/RESULTS.md

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick --out benchmarks/results-quick.json --md benchmarks/RESULTS-quick.md

lint: $(STAMP)
	$(BIN)/ruff check searchcore plugins spaces tests examples benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf runs mlruns mlartifacts mlflow.db searchcore.db searchcore.journal* ray_results
