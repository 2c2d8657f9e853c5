# Two commands do everything on a fresh machine:
#   make run   - set up (.venv + pinned requirements), then serve the app on the shipped toy models
#   make test  - set up, then run every test (output ends with pytest's summary line)
# Options: PORT=8502 make run; make test PYTEST_ARGS="-m 'not slow'"; PYTEST_WORKERS=1 make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501
PYTEST_WORKERS ?= 2

.PHONY: setup run test bench notebooks derivations clean

$(STAMP): requirements.txt pyproject.toml
	@start=$$(date +%s); \
	if [ ! -x $(PY) ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null || { \
	    echo "error: mechinterp-edu needs Python 3.11 or newer as '$(PYTHON)' (try: make PYTHON=python3.11 ...)."; exit 1; }; \
	  $(PYTHON) -m venv $(VENV) || { \
	    echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3.11-venv)."; exit 1; }; \
	fi; \
	echo "Installing pinned requirements into $(VENV) (torch==2.13.0 CPU wheel)..."; \
	$(PY) -m pip install -q torch==2.13.0 && \
	$(PY) -m pip install -q -r requirements.txt && \
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	touch $(STAMP) && \
	echo "Set-up took $$(( $$(date +%s) - start )) s."

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --server.port $(PORT) --browser.gatherUsageStats false

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(PY) -m mechinterp_edu bench

notebooks: setup
	$(PY) -m mechinterp_edu notebooks

derivations: setup
	$(PY) -m mechinterp_edu derivations

clean:
	rm -rf $(VENV) .pytest_cache artifacts notebooks
