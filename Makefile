# Two commands do everything on a fresh machine:
#   make run   - set up (.venv + pinned requirements), then serve the app on the shipped toy models
#   make test  - set up, then run every test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501
PYTEST_WORKERS ?= 2

.PHONY: setup run test bench notebooks clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned requirements into $(VENV) (torch==2.13.0 CPU wheel)..."
	@start=$$(date +%s); \
	$(PY) -m pip install -q torch==2.13.0 && \
	$(PY) -m pip install -q -r requirements.txt && \
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	echo "Set-up took $$(( $$(date +%s) - start )) s."
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --server.port $(PORT) --browser.gatherUsageStats false

test: setup
	@start=$$(date +%s); \
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	echo "Suite took $$(( $$(date +%s) - start )) s."; exit $$rc

bench: setup
	$(PY) -m mechinterp_edu bench

notebooks: setup
	$(PY) -m mechinterp_edu notebooks

clean:
	rm -rf $(VENV) .pytest_cache artifacts notebooks
