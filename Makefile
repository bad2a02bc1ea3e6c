# edge_tl — two commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Keep a torch that is already installed system-wide (a Jetson's NVIDIA build); otherwise pin
# the CPU wheel unless a CUDA driver is present.
SYSTEM_TORCH := $(shell $(PYTHON) -c "import torch" >/dev/null 2>&1 && echo yes)
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
ifeq ($(SYSTEM_TORCH),yes)
  VENV_FLAGS := --system-site-packages
  CONSTRAINTS :=
else ifeq ($(HAS_NVIDIA),yes)
  CONSTRAINTS := -c constraints/cuda.txt
else
  CONSTRAINTS := -c constraints/cpu.txt
endif

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt constraints/cuda.txt
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[train,serve,fed,test]'
	touch $@

demo: install
	$(BIN)/python examples/demo.py

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# ruff (rules and complexity in pyproject.toml) and its formatter; the import contract runs in
# the suite (tests/test_architecture.py).
lint: install
	$(BIN)/ruff check edge_tl tests bench examples
	$(BIN)/ruff format --check edge_tl tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
