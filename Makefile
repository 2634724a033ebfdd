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
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; } \
	  || echo "setup: could not install chromium; the browser tests of the viewer will be skipped"; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

sample: $(STAMP)
	$(BIN)/python -m recon.data.synthetic $(SAMPLE)

# The main job on the sample scene: solve the cameras, train for a fixed wall-time budget, evaluate held-out views.
DEMO_BUDGET ?= 360
demo: sample
	$(BIN)/recon process $(SAMPLE)/images --out $(DEMO_OUT)/scene --overwrite
	$(BIN)/recon train $(DEMO_OUT)/scene --out $(DEMO_OUT)/run --config configs/fast.yaml \
		--time-budget $(DEMO_BUDGET) --set train.eval_at_end=false --overwrite
	$(BIN)/recon eval $(DEMO_OUT)/run
	@echo "demo: cameras in $(DEMO_OUT)/scene, splats in $(DEMO_OUT)/run/splats.ply,"
	@echo "      held-out metrics in $(DEMO_OUT)/run/metrics.json, renders in $(DEMO_OUT)/run/renders/test/"
	@echo "demo: look at it in the browser: $(BIN)/recon view $(DEMO_OUT)/run"

test: sample
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check recon viewer tests scripts
	$(BIN)/ruff format --check recon viewer tests scripts

format: $(STAMP)
	$(BIN)/ruff format recon viewer tests scripts
	$(BIN)/ruff check --fix recon viewer tests scripts

clean:
	rm -rf $(DEMO_OUT) $(SAMPLE)
