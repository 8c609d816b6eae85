# Two commands a fresh clone needs: `make repro` (set up, then run the pipeline) and `make test`.
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

repro: setup
	dvc repro

test: setup lint
	pytest

lint: setup
	ruff check .

bench: setup
	python -m bench.mlp_speed

clean:
	rm -rf $(VENV) data/raw data/prepared models/*.pt models/*.pt2 models/*.onnx
