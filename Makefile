# Two commands do all set-up:  `make run` (dashboard on the sample model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt requirements-bench.txt | cksum | cut -d' ' -f1)
PORT ?= 8501
# Two test processes (pytest-xdist), one test file each at a time: the suite mostly waits on child processes, servers
# and browsers, so two overlap on two cores. `make test PARALLEL=` runs it in one process.
PARALLEL ?= -n 2 --dist loadfile

.PHONY: run test test-fast lint bench venv system-deps clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-bench.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	@rm -f $(VENV)/.installed-* && touch $@

system-deps:
	@bash scripts/ensure_system_deps.sh

run: $(STAMP)
	$(PY) -m streamlit run app.py --server.port $(PORT)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PARALLEL)

# What a developer runs all day: lint, unit and AppTest tests; no browser, no Ray, nothing marked slow (pyproject.toml).
FAST := not browser and not ray and not slow
test-fast: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "$(FAST)" $(PARALLEL)

bench: $(STAMP)
	$(PY) -m bench.run_bench

clean:
	rm -rf .pytest_cache studio_data/tmp test-artifacts
