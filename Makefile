# The two commands of the README. Both set up .venv first (idempotent, see ops/setup.sh).
.PHONY: run test setup lint

export OMP_NUM_THREADS ?= 1

setup:
	@ops/setup.sh dev

run: setup
	ops/run.sh $(ARGS)

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check soar_async actors tests
