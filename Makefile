# The two set-up commands of README.md:  `make demo`  and  `make test`.
.PHONY: demo test install install-dev lint typecheck bench fresh-clone-test

demo: install
	.venv/bin/ainode demo

# The suite on TEST_WORKERS pytest-xdist workers, one test file per worker at a time (files share
# module fixtures; long files go first, tests/conftest.py).  Serially: make test TEST_WORKERS=0
TEST_WORKERS ?= 3
test: install-dev
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

install:
	deploy/install.sh

install-dev:
	deploy/install.sh --dev

PY_CHECKERS = tools/checkers/check-dicom tools/checkers/check-sr tools/checkers/check-refs

lint:
	.venv/bin/ruff check node dicom_rules training tests bench tools $(PY_CHECKERS)
	.venv/bin/ruff format --check node dicom_rules training tests bench tools $(PY_CHECKERS)

typecheck:
	.venv/bin/mypy

# A clone of HEAD into an empty folder runs `make demo` and `make test` (what .ci/run does).
fresh-clone-test:
	tools/fresh-clone-test
