# The targets people type. Everything installs into .venv, which `make` creates.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages wheel-check tutorials demo test test-slow lint format bench docs notebooks clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision are resolved together from the registry (no exact torch pin).
	$(BIN)/python -m pip install --quiet -e ".[test,dev,distributed,docs]"
	touch $(STAMP)

# Graphviz for `pyro-vae inspect`'s plate diagram: checked on every make, not recorded in the
# stamp, so an install that failed (the package lock held elsewhere, say) is tried again.
system-packages:
	@bash .ci/graphviz

install: $(STAMP) system-packages

demo: install
	$(BIN)/pyro-vae demo

# One pytest worker per core (tests/conftest.py gives each worker one torch thread).
test: install
	$(BIN)/python -m pytest -n auto --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The documentation site: the user guide, the tutorials executed as notebooks (full size; CI=1 for
# tiny sizes), the API reference. Offline; any warning fails the build.
docs: $(STAMP)
	bash .ci/docs-debian-packages
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "the site: docs/_build/html/index.html"

# The nine tutorials at full size, as plain scripts with their assertions, two at a time on two
# cores: the check to run before a change to the library lands (about an hour; tutorials/README.md).
tutorials: install
	$(BIN)/python docs/run_tutorials.py

# The nine tutorials executed as notebooks, with their scripts, in notebooks/ (to zip and hand out).
notebooks: $(STAMP)
	$(BIN)/python docs/tutorial_notebooks.py

# The install a user does: the wheel in clean virtual environments, every command run from it.
wheel-check:
	bash .ci/wheel-check

bench: $(STAMP)
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache docs/_build docs/api docs/_generated docs/tutorials/[0-9][0-9]_*
