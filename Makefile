# vlexp: `make train` runs the default job, `make test` runs the test suite.
# Both create the virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# GPU users: override with the torch build for your CUDA, e.g. TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install train test test-fast lint format bench clean sysdeps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,cat,scale]"
	@$(MAKE) --no-print-directory sysdeps
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with vlexp and its dev extras

sysdeps:  ## Tesseract OCR for the CAT filter's text-spotting (Debian package)
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null; \
	  else echo "NOTE: install Tesseract for text-spotting: sudo apt-get install tesseract-ocr tesseract-ocr-eng"; fi; }

train: $(STAMP)  ## the default job: CLIP on the embedded synthetic data (CPU, minutes)
	$(PY) -m vlexp.run $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check vlexp tests benchmarks experiments
	$(VENV)/bin/ruff format --check vlexp tests benchmarks experiments

format: $(STAMP)
	$(VENV)/bin/ruff format vlexp tests benchmarks experiments
	$(VENV)/bin/ruff check --fix vlexp tests benchmarks experiments

bench: $(STAMP)  ## speed/memory benchmarks: ratios measured side by side
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache .cache wandb
