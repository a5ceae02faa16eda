# Two entry points for a fresh machine; each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here to the builds this kind of machine serves; pyproject.toml keeps ranges.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup quickstart test lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN) || $(PY) -m pip install -q 'torch>=2.3' 'torchvision>=0.18'
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/detlight fit --config configs/quickstart.yaml

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check detlight tests benchmarks
	$(VENV)/bin/mypy detlight
