# Two commands do all the set-up: `make run` and `make test`. Both install exactly what the locks pin
# (every package, direct and transitive, with its hashes); `make lock` regenerates the locks from
# pyproject.toml, and an upgrade is that plus a green `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check

LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# One resolution for every platform and every Python the project supports (markers where they
# differ), so a Mac, a Linux CI box and the Docker image install the same versions.
COMPILE  := $(BIN)/uv pip compile pyproject.toml --group build --universal --python-version 3.11 \
            --generate-hashes --quiet --custom-compile-command "make lock"

.PHONY: run test lint typecheck pytest schema lock graphiql-assets clean

run: $(VENV)/.installed
	$(BIN)/tradestream serve

test: $(VENV)/.installed-dev lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_ARGS)

schema: $(VENV)/.installed
	$(BIN)/tradestream export-schema --output schema.graphql

# uv keeps the versions a lock already pins while pyproject.toml allows them; LOCK_ARGS=--upgrade
# (or --upgrade-package NAME) moves them. The dev lock takes the runtime lock's versions as
# constraints: `make run` and `make test` run the same runtime packages.
lock: $(VENV)/.installed-dev
	$(COMPILE) $(LOCK_ARGS) --output-file $(LOCK)
	$(COMPILE) $(LOCK_ARGS) --extra dev --constraints $(LOCK) --output-file $(DEV_LOCK)

# GraphiQL's browser builds into api/transport/static/graphiql/vendor/, from the npm packages that
# tools/graphiql/package-lock.json pins (needs Node and npm; docs/operations.md: upgrading GraphiQL).
graphiql-assets:
	tools/graphiql/vendor.sh

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

# The lock holds pip and setuptools too: the project itself is installed with them, without a
# build environment fetched from the index. PYTHONWARNINGS quiets setuptools' notice that a folder
# named like the package may shadow it: in an editable install that folder is the package.
$(VENV)/.installed: $(LOCK) pyproject.toml $(VENV)/.created
	$(PIP) install --require-hashes --requirement $(LOCK)
	PYTHONWARNINGS=ignore $(PIP) install --no-deps --no-build-isolation --editable .
	touch $@

$(VENV)/.installed-dev: $(DEV_LOCK) pyproject.toml $(VENV)/.created
	$(PIP) install --require-hashes --requirement $(DEV_LOCK)
	PYTHONWARNINGS=ignore $(PIP) install --no-deps --no-build-isolation --editable .
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
