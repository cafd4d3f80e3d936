#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (unit, integration, e2e, slow).
# Needs PostgreSQL and RabbitMQ (see SAGA_TEST_DATABASE_URL / SAGA_TEST_BROKER_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff" >&2
.venv/bin/ruff check saga tests examples benchmarks
.venv/bin/ruff format --check saga tests examples benchmarks
echo "== mypy --strict" >&2
.venv/bin/mypy
echo "== pytest" >&2
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$code"
