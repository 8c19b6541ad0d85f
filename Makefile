# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install demo test bench clean

$(BIN)/segkit: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: on CPU machines this is a local CPU wheel; any other spec pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,onnx]" pillow scipy
	touch $@

install: $(BIN)/segkit

demo: install
	$(BIN)/segkit train recipes/quickstart.yaml --output-dir runs/quickstart --overwrite

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
