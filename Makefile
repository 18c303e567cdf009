# The two commands of the README. Each sets up what it needs first (scripts/setup is idempotent).
.PHONY: run test setup lint docs

run: setup
	.venv/bin/rest-consumer dev

# The end-to-end tests run a second time without the fast path (FAST_TRANSPORT=false), the way
# back to Celery's and kombu's public APIs if an upgrade breaks a private one.
test: setup lint docs
	.venv/bin/python -m pytest
	FAST_TRANSPORT=false .venv/bin/python -m pytest tests/test_pipeline.py tests/test_engine.py

setup:
	@scripts/setup

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

# The documentation site, built strictly: a broken link or a schema field the job reference
# does not explain fails the build.
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site
