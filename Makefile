VENV ?= .venv
BIN := $(VENV)/bin

# What CI runs (the README's test command): lint, types, then the test suite.
.PHONY: check lint types test
check: lint types test

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types:
	$(BIN)/mypy

test:
	$(BIN)/pytest $(PYTEST_ARGS)
