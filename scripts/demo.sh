#!/usr/bin/env bash
# The main job: set up .venv and run the demo on the embedded default (the spool under .mlobs/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh" demo
cd "$root"
exec "$root/.venv/bin/mlobs" demo "$@"
