# `make run`: set up, then the SNS pipeline on Fashion-MNIST (vanilla, sensitive-neuron
# selection, single-step SNS fine-tune, evaluation of both on the full test set, export),
# then its summary with the total time, the CPU and the precision it ran in.
# `make test`: set up, then run the test suite.
# Set-up (scripts/setup.sh) is idempotent: it reuses .venv unless pyproject.toml changed.
#
# The recipe (docs/hyperparameters.md, chosen on the validation split): 2 vanilla epochs,
# then 2 epochs of SNS (conv3+conv4, lambda 0.5, top 10 %) with single-step FGSM-RS
# training at eps 0.1, in the precision the hardware computes fastest (--precision auto).
# Clean and FGSM accuracy on the full test set; PGD-20 on its first 2,000 images (a fixed
# subset: the full-set PGD-20 alone would take 5 minutes on an AVX2-only CPU).
# The paper's PGD-10 SNS is one option away: make run ATTACK=pgd_linf EPOCHS=4.
# Another setting is another run: give it its own RUN_DIR, e.g.
#   make run PRECISION=float32 RUN_DIR=runs/fashion_mnist_sns_float32
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/fashion_mnist_sns
EPOCHS ?= 2
VANILLA_EPOCHS ?= 2
ROBUST_EVAL_LIMIT ?= 2000
ATTACK ?= fgsm_rs
PRECISION ?= auto
PYTEST_ARGS ?=

.PHONY: run test setup clean

setup:
	@VENV=$(VENV) bash scripts/setup.sh

# Rerun only when the code or the settings changed since the last completed run; an
# interrupted run resumes where it stopped (--overwrite replaces completed runs only).
# The wall time of training + evaluation + export (set-up excluded) goes to main_job.json.
$(RUN_DIR)/metrics.json: pyproject.toml cli.py $(wildcard keras_sns/*.py keras_sns/*/*.py) Makefile
	@start=$$(date +%s.%N); \
	$(PY) cli.py train --method sns --attack $(ATTACK) --epochs $(EPOCHS) \
	    --vanilla-epochs $(VANILLA_EPOCHS) --robust-eval-limit $(ROBUST_EVAL_LIMIT) \
	    --precision $(PRECISION) --out $(RUN_DIR) --overwrite && \
	$(PY) cli.py export --model $(RUN_DIR)/model.keras --name fmnist_sns \
	    --base-dir $(RUN_DIR)/exports --label stable --eps 0.1 && \
	$(PY) -c 'import json, sys; json.dump({"seconds": round(float(sys.argv[2]) - float(sys.argv[1]), 1), \
	    "command": sys.argv[3]}, open(sys.argv[4], "w"), indent=1)' \
	    "$$start" "$$(date +%s.%N)" "make run ATTACK=$(ATTACK) EPOCHS=$(EPOCHS) VANILLA_EPOCHS=$(VANILLA_EPOCHS) ROBUST_EVAL_LIMIT=$(ROBUST_EVAL_LIMIT) PRECISION=$(PRECISION)" \
	    $(RUN_DIR)/main_job.json

run: setup
	@$(MAKE) --no-print-directory $(RUN_DIR)/metrics.json
	@$(PY) cli.py summary $(RUN_DIR)
	@$(PY) -c 'import json, sys; d = sys.argv[1]; s = json.load(open(d + "/main_job.json"))["seconds"]; \
	    c = json.load(open(d + "/config.json")); hw = c["hardware"]; \
	    gpus = ", ".join(g["name"] for g in hw["gpus"]) or "none"; \
	    print("Main job: %d min %02d s (training, evaluation, export; set-up excluded)" % (s // 60, s % 60)); \
	    print("CPU: %s; GPUs: %s" % (hw["cpu_model"], gpus)); \
	    print("Precision: %s (%s)" % (c["precision"], c["precision_reason"]))' $(RUN_DIR)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
