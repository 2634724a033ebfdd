# The two commands of the README: `make demo` and `make test`. Both set everything up first and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recon-installed
SAMPLE := data/sample
DEMO_OUT := out/demo

.PHONY: demo test setup sample lint format clean

setup: $(STAMP)

# torch is installed first and pinned, so pip never resolves a multi-GB CUDA build of it.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

sample: $(STAMP)
	$(BIN)/python -m recon.data.synthetic $(SAMPLE)

demo: sample
	$(BIN)/recon process $(SAMPLE)/images --out $(DEMO_OUT)/scene --overwrite
	@echo "demo: scene with solved cameras in $(DEMO_OUT)/scene (report: $(DEMO_OUT)/scene/report.json)"

test: sample
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check recon viewer tests scripts
	$(BIN)/ruff format --check recon viewer tests scripts

format: $(STAMP)
	$(BIN)/ruff format recon viewer tests scripts
	$(BIN)/ruff check --fix recon viewer tests scripts

clean:
	rm -rf $(DEMO_OUT) $(SAMPLE)
