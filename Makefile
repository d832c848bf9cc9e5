# `make run`: set up, train and evaluate the default model on Fashion-MNIST.
# `make test`: set up, then run the test suite.
# Set-up (scripts/setup.sh) is idempotent: it reuses .venv unless pyproject.toml changed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/fashion_mnist_small_cnn
EPOCHS ?= 5
PYTEST_ARGS ?=

.PHONY: run test setup clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

# Retrain only when the code or the settings changed since the last run.
$(RUN_DIR)/metrics.json: pyproject.toml cli.py $(wildcard keras_sns/*.py) Makefile
	$(PY) cli.py train --method vanilla --epochs $(EPOCHS) --out $(RUN_DIR) --overwrite

run: setup
	@$(MAKE) --no-print-directory $(RUN_DIR)/metrics.json
	@echo "Results in $(RUN_DIR)/: model.keras, config.json, history.csv, metrics.json, logs/"
	@cat $(RUN_DIR)/metrics.json

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
