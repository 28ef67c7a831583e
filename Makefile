# The two commands a newcomer needs: `make run` and `make test`.
# Everything else (the venv, the install) is done for you on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install clean bench lint screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded,bench,sim]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole system locally (embedded PostgreSQL unless DATABASE_URL is set).
run: $(STAMP)
	$(BIN)/shouhu up

## Run the whole test suite (embedded PostgreSQL unless TEST_DATABASE_URL is set).
test: $(STAMP)
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-2} $(PYTEST_ARGS)

## Retake the README's pictures (docs/*.png): the browser tests that check those pages take them.
screenshots: $(STAMP)
	SHOUHU_SCREENSHOTS=1 $(BIN)/python -m pytest -n $${PYTEST_WORKERS:-2} -q \
		$$(grep -rl --include='test_*.py' readme_screenshot tests)

bench: $(STAMP)
	$(BIN)/shouhu bench

clean:
	rm -rf $(VENV) .shouhu .pytest_cache
