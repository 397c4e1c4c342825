# Two commands for a newcomer: `make demo` and `make test`. Both create .venv if missing and install
# the package with its optional extras (text encoder, ONNX Runtime) into it; the install is redone only when pyproject.toml changes, so a second run costs seconds.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test check-readme lint install clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install --quiet -e ".[dev,text,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/thinkingearth demo --out demo-out --overwrite

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not readme_long"

# The README's minutes-long commands (full demo, fine-tuning, benchmarks), run as written.
check-readme: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m readme_long tests/test_readme.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out
