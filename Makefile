# Two entry points for a fresh machine; each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here to the builds this kind of machine serves; pyproject.toml keeps ranges.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup quickstart test lint test-mmcv openmmlab test-openmmlab

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
	# site.addsitedir (not a bare path line) also runs the base venv's .pth files: detlight's editable install included
	$(MMCV_PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/detlight-base.pth", "w").write("import site; site.addsitedir(%r)\n" % sys.argv[1])' \
		"$$($(PY) -c 'import site; print(site.getsitepackages()[0])')"
	cd / && $(abspath $(MMCV_PY)) -c 'import torch, lightning, detlight'  # the base venv's packages and detlight are visible
	echo 'setuptools<70' > $(MMCV_VENV)/constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(MMCV_VENV)/constraints.txt MMCV_WITH_OPS=0 $(MMCV_PY) -m pip install -q mmcv==1.7.2
	$(MMCV_PY) -c 'import mmcv, torch; from mmcv.runner import HOOKS; print("mmcv", mmcv.__version__, "torch", torch.__version__)'
	touch $@

test-mmcv: $(MMCV_VENV)/.installed
	$(MMCV_PY) -m pytest -q -p no:cacheprovider -m mmcv tests/compat

# OpenMMLab's own code (mmcv 1.7.0 pure Python, mmdet 2.28.2, mmdet3d 1.0.0rc6, mmsegmentation 0.30.0) in a scratch venv
# that layers on $(VENV) (torch and detlight are not reinstalled): mmcv's compiled ops are served by detlight.openmmlab.
# mmdet3d 1.0.0rc6 asserts mmcv <= 1.7.0; its sdist builds here with --no-build-isolation. Runs the `openmmlab` tests.
OPENMMLAB_VENV ?= .venv-openmmlab
OPENMMLAB_PY := $(OPENMMLAB_VENV)/bin/python
OPENMMLAB_PIP := PIP_CONSTRAINT=$(CURDIR)/$(OPENMMLAB_VENV)/constraints.txt $(OPENMMLAB_PY) -m pip install -q

$(OPENMMLAB_VENV)/.installed: $(VENV)/.installed
	test -x $(OPENMMLAB_PY) || $(PYTHON) -m venv $(OPENMMLAB_VENV)
	# site.addsitedir (not a bare path line) also runs the base venv's .pth files: detlight's editable install included
	$(OPENMMLAB_PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/detlight-base.pth", "w").write("import site; site.addsitedir(%r)\n" % sys.argv[1])' \
		"$$($(PY) -c 'import site; print(site.getsitepackages()[0])')"
	printf 'setuptools<70\nnumpy<2.3\n' > $(OPENMMLAB_VENV)/constraints.txt
	$(OPENMMLAB_PIP) 'setuptools<70' wheel
	MMCV_WITH_OPS=0 $(OPENMMLAB_PIP) mmcv==1.7.0
	$(OPENMMLAB_PIP) --no-deps mmdet==2.28.2 mmsegmentation==0.30.0
	$(OPENMMLAB_PIP) --no-build-isolation --no-deps mmdet3d==1.0.0rc6
	$(OPENMMLAB_PIP) terminaltables prettytable pandas scikit-learn cachetools descartes fire pycocotools scipy shapely six matplotlib numba pyquaternion trimesh plyfile networkx
	$(OPENMMLAB_PIP) --no-deps lyft_dataset_sdk==0.0.8 nuscenes-devkit==1.1.11
	$(OPENMMLAB_PY) -c 'import detlight, mmcv, mmdet, mmdet3d; print("mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmdet3d", mmdet3d.__version__)'
	touch $@

# `detlight` in that venv: .venv-openmmlab/bin/detlight fit --config <mmdet config>.py trains mmdet's own code
$(OPENMMLAB_VENV)/bin/detlight: $(OPENMMLAB_VENV)/.installed
	printf '#!/bin/sh\nexec "%s" -m detlight.cli "$$@"\n' "$(CURDIR)/$(OPENMMLAB_PY)" > $@ && chmod +x $@

openmmlab: $(OPENMMLAB_VENV)/bin/detlight

test-openmmlab: $(OPENMMLAB_VENV)/.installed
	$(OPENMMLAB_PY) -m pytest -q -p no:cacheprovider -m openmmlab tests
