# The README's two commands:  `make demo`  and  `make test`.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two pytest workers (pytest-xdist): CI has 2 cores and most tests are graph building, not math.
# Work stealing keeps both workers busy to the end; the 30 slowest tests are listed, for the
# suite's 20-minute budget.
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=30

.PHONY: demo demo-seg test bench models clean

$(VENV)/.demo-deps: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.test-deps: $(VENV)/.demo-deps
	$(PY) -m pip install --quiet -e ".[all,dev,torch]"
	touch $@

demo: $(VENV)/.demo-deps
	$(PY) -m keras_visrec demo

# The dense-prediction demo: a small UperNet on digit canvases, end to end and offline.
demo-seg: $(VENV)/.demo-deps
	$(PY) -m keras_visrec seg-demo

# pytest exits 5 when it collected no test: that is not a failure of the suite.
test: $(VENV)/.test-deps
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && { echo "pytest: no tests collected"; rc=0; }; exit $$rc

models: $(VENV)/.demo-deps
	$(PY) -m keras_visrec models --markdown

bench: $(VENV)/.test-deps
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
