# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

RATINGCTR := $(VENV)/bin/ratingctr
# `make serve` trains and exports this bundle on first use (MovieLens-100k, DCNV2, rating head).
BUNDLE ?= bundles/dcnv2-rating
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test test-fast serve clean

install: $(STAMP)

# Re-install whenever the dependency declarations change.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The unit tier only (no servers, TorchServe, Locust, compose or ML-100k; tiers in tests/conftest.py).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m unit

serve: $(BUNDLE)/manifest.json
	$(RATINGCTR) serve --bundle $(BUNDLE) --host $(HOST) --port $(PORT)

# Order-only on the venv: a dependency change must not retrain an existing bundle.
$(BUNDLE)/manifest.json: | $(STAMP)
	$(RATINGCTR) train-retriever --dataset ml-100k --out runs/retriever
	$(RATINGCTR) train --model DCNV2 --dataset ml-100k --head rating --out runs/dcnv2-rating
	$(RATINGCTR) export --ranker runs/dcnv2-rating --retriever runs/retriever --out $(BUNDLE)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
