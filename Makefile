# The two commands of the README:
#   make demo   set up, pre-train DINO + SelfPatch on the built-in data (cpu-demo preset),
#               evaluate it next to random weights, print the elapsed times and the report
#   make test   set up and run the test suite
# Set-up installs only what is missing: Debian's dataset-fashion-mnist (when apt is available),
# a virtual environment in .venv, PyTorch (pinned here only) and the package with its extras.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PRESET  ?= cpu-demo
RUN     ?= runs/$(PRESET)-dino-selfpatch
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup setup-dev demo test lint clean-runs

setup: $(BIN)/.installed $(FMNIST)

setup-dev: setup $(BIN)/.installed-dev

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
	$(BIN)/python -m pip install -q -e .
	@touch $@

# Test tools, plus OpenCV and scikit-image to check our DAVIS F against the official method.
$(BIN)/.installed-dev: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

# The timer starts after set-up (installing packages depends on the network, not the CPU); it
# covers building the built-in data on first use, pre-training and evaluation.
demo: setup
	@start=$$(date +%s); \
	$(BIN)/selfpatch pretrain --config $(PRESET) run.output_dir=$(RUN) \
	  $$(test -f $(RUN)/checkpoints/last.pt && echo --resume) || exit $$?; \
	trained=$$(date +%s); \
	$(BIN)/selfpatch eval all --checkpoint $(RUN) --checkpoint random:vit_tiny:16 \
	  --out $(RUN)/eval || exit $$?; \
	end=$$(date +%s); \
	echo "demo: data + pre-training $$((trained - start)) s, evaluation $$((end - trained)) s," \
	  "total $$(( (end - start) / 60 )) min $$(( (end - start) % 60 )) s"; \
	echo "report: $(RUN)/eval/report.md"

test: setup-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest tests --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

lint: setup-dev
	$(BIN)/ruff check src tests benchmarks examples

clean-runs:
	rm -rf runs
