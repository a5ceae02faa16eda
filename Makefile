# Two entry points for a fresh machine; each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here to the builds this kind of machine serves; pyproject.toml keeps ranges.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup quickstart test lint test-mmcv

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

# Real mmcv 1.7.2 (pure Python, no ops) in a scratch venv that reuses $(VENV)'s packages (torch is not reinstalled):
# runs the tests marked `mmcv`, which the default `make test` deselects. mmcv 1.7.2's setup.py needs setuptools<70.
MMCV_VENV ?= .venv-mmcv
MMCV_PY := $(MMCV_VENV)/bin/python

$(MMCV_VENV)/.installed: $(VENV)/.installed
	test -x $(MMCV_PY) || $(PYTHON) -m venv $(MMCV_VENV)
	$(MMCV_PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/detlight-base.pth", "w").write(sys.argv[1] + "\n")' \
		"$$($(PY) -c 'import site; print(site.getsitepackages()[0])')"
	$(MMCV_PY) -c 'import torch, lightning'  # the base venv's packages are visible
	echo 'setuptools<70' > $(MMCV_VENV)/constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(MMCV_VENV)/constraints.txt MMCV_WITH_OPS=0 $(MMCV_PY) -m pip install -q mmcv==1.7.2
	$(MMCV_PY) -c 'import mmcv, torch; from mmcv.runner import HOOKS; print("mmcv", mmcv.__version__, "torch", torch.__version__)'
	touch $@

test-mmcv: $(MMCV_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(MMCV_PY) -m pytest -q -p no:cacheprovider -m mmcv tests/compat
