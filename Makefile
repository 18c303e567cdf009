# The two commands of the README. Each sets up what it needs first (scripts/setup is idempotent).
.PHONY: run test setup lint docs

run: setup
	.venv/bin/rest-consumer dev

test: setup lint docs
	.venv/bin/python -m pytest

setup:
	@scripts/setup

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

# The documentation site, built strictly: a broken link or a schema field the job reference
# does not explain fails the build.
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site
