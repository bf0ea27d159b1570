# Tiny Transfer Learning: `make book` builds the HTML book, `make test` runs every test.
# Both set everything up first (a .venv, the pinned packages, the vendored JavaScript).
SHELL := /bin/bash
.DELETE_ON_ERROR:
.PHONY: setup compiler vendor browser book test lab labs strip clean gpu-compile

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
VENDORED := _build/extra/.vendored
BOOK := _build/html/index.html
# Everything the built pages depend on; a change to any of these rebuilds the book.
BOOK_INPUTS := _config.yml _toc.yml requirements.txt $(shell find book ondevice kernels labs js/explorer \
	benchmarks/results -type f \( -name '*.md' -o -name '*.ipynb' -o -name '*.py' -o -name '*.png' -o -name '*.svg' \
	-o -name '*.js' -o -name '*.json' -o -name '*.cpp' \) \
	-not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' 2>/dev/null)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

setup: $(INSTALLED)

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

vendor: $(VENDORED)

$(VENDORED): js/package.json js/package-lock.json tools/vendor_js.py $(INSTALLED)
	cd js && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python tools/vendor_js.py
	touch $@

browser:
	bash tools/apt_install.sh chromium chromium "the browser test"

# A C++ compiler for the counting allocator (ondevice/memory/allocator.py), which the chapter-5
# notebooks and the step tests build on first use.
compiler:
	bash tools/apt_install.sh g++ g++ "building the counting allocator that measures a training step"

book: $(BOOK)

$(BOOK): $(INSTALLED) $(VENDORED) $(BOOK_INPUTS) tools/build_book.py | compiler
	$(BIN)/python tools/build_book.py
	touch $@

# Unit tests + nbval over book/ and labs/solutions/ (Triton in its interpreter) + the browser test.
# Two workers on two cores: one thread each (two 2-thread OpenMP pools on 2 cores spin and stall).
test: book browser
	TRITON_INTERPRET=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env \
		--junitxml=_build/test-results.xml $(PYTEST_ARGS)

# The compile check of tests/test_kernels_compile.py under Triton 3.6.0 (the Triton of torch 2.11,
# common on GPU machines): that Triton alone, in its own folder ahead of the venv's on the path.
TRITON_OLD := 3.6.0
gpu-compile: $(INSTALLED)
	test -d _build/triton-$(TRITON_OLD)/triton || $(BIN)/python -m pip install --quiet --no-deps \
		--target _build/triton-$(TRITON_OLD) triton==$(TRITON_OLD)
	TRITON_INTERPRET=0 PYTHONPATH=_build/triton-$(TRITON_OLD) $(BIN)/python -m kernels.compile_check \
		--out _build/kernels-compile-triton-$(TRITON_OLD).json

lab: $(INSTALLED)
	$(BIN)/jupyter lab $(ROOT_FLAG) --notebook-dir=.

# The student labs (labs/*.ipynb) from their solved twins in labs/solutions/, by nbgrader's
# generate_assignment (labs/generate.py; tests/test_labs.py fails until they agree).
labs: $(INSTALLED)
	$(BIN)/python labs/generate.py

# Remove outputs from notebooks before committing (keeps the small outputs nbval compares).
strip: $(INSTALLED)
	$(BIN)/python tools/strip_outputs.py $$(git ls-files '*.ipynb')

clean:
	rm -rf _build js/node_modules .hypothesis
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
