#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv and installs mlobs into it, editable,
# with the extras named in $1 (for example "demo" or "dev"). Sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
# Reinstall only when pyproject.toml changed since the last install into this venv.
stamp="$root/.venv/.mlobs-installed-$extras"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root${extras:+[$extras]}"
  touch "$stamp"
fi
