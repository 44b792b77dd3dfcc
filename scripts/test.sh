#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint, types and the test suite.
# Exits non-zero on any failure, including pytest's "no tests ran" (exit 5).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh dev
bash scripts/backends.sh
py=.venv/bin/python
echo "== ruff"
$py -m ruff check .
$py -m ruff format --check .
echo "== mypy"
$py -m mypy
echo "== pytest"
$py -m pytest "$@"
