# The two commands of the README:
#   make demo   set up, pre-train DINO + SelfPatch on the built-in data (cpu-quick), evaluate,
#               and print where the report is
#   make test   set up and run the test suite
# Set-up installs only what is missing: Debian's dataset-fashion-mnist (when apt is available),
# a virtual environment in .venv, PyTorch (pinned here only) and the package with its extras.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1
RUN     ?= runs/cpu-quick-dino-selfpatch
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test lint clean-runs

setup: $(BIN)/.installed $(FMNIST)

$(FMNIST):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "note: could not install dataset-fashion-mnist; selfpatch will try torchvision's download"; \
	fi

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

demo: setup
	$(BIN)/selfpatch pretrain --config cpu-quick run.output_dir=$(RUN) \
	  $$(test -f $(RUN)/checkpoints/last.pt && echo --resume)
	$(BIN)/selfpatch eval all --checkpoint $(RUN) --checkpoint random:vit_tiny:16 --out $(RUN)/eval
	@echo "report: $(RUN)/eval/report.md"

test: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean-runs:
	rm -rf runs
