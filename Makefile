# The two commands of the README. Each sets up what it needs first (scripts/setup is idempotent).
.PHONY: run test setup lint

run: setup
	.venv/bin/rest-consumer dev

test: setup lint
	.venv/bin/python -m pytest

setup:
	@scripts/setup

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy
