#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# The lock pins the whole dependency tree; pip skips what is already installed at the pinned version.
# FOURM_EXTRAS picks the optional dependency groups: dev (default: tests, linters) or k8s (the container image).
.venv/bin/python -m pip install --quiet --progress-bar off -c requirements.lock -e ".[${FOURM_EXTRAS:-dev}]"
