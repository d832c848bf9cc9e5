# `make run`: set up, then the SNS pipeline on Fashion-MNIST (vanilla, sensitive-neuron
# selection, SNS fine-tune, evaluation of both on the full test set).
# `make test`: set up, then run the test suite.
# Set-up (scripts/setup.sh) is idempotent: it reuses .venv unless pyproject.toml changed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/fashion_mnist_sns
EPOCHS ?= 4
VANILLA_EPOCHS ?= 5
PYTEST_ARGS ?=

.PHONY: run test setup clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

# Rerun only when the code or the settings changed since the last completed run; an
# interrupted run resumes where it stopped (--overwrite replaces completed runs only).
$(RUN_DIR)/metrics.json: pyproject.toml cli.py $(wildcard keras_sns/*.py keras_sns/*/*.py) Makefile
	$(PY) cli.py train --method sns --epochs $(EPOCHS) --vanilla-epochs $(VANILLA_EPOCHS) \
	    --precision mixed_bfloat16 --out $(RUN_DIR) --overwrite
	$(PY) cli.py export --model $(RUN_DIR)/model.keras --name fmnist_sns --base-dir $(RUN_DIR)/exports \
	    --label stable --eps 0.1

run: setup
	@$(MAKE) --no-print-directory $(RUN_DIR)/metrics.json
	@$(PY) cli.py summary $(RUN_DIR)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
