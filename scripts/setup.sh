#!/usr/bin/env bash
# Set up nas-search on a fresh Debian/Ubuntu machine: system packages (with --dev: the
# PostgreSQL server and Chromium that the integration tests use), a virtualenv in .venv,
# and the package itself (with --dev also its test and lint tools: pytest, ruff, mypy,
# import-linter). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

if [[ $DEV -eq 1 ]] && command -v apt-get >/dev/null; then
  missing=()
  { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing+=(postgresql)
  command -v chromium >/dev/null || missing+=(chromium)
  { command -v c++ >/dev/null || command -v g++ >/dev/null; } || missing+=(g++)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [[ $DEV -eq 1 ]]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e .
fi
# Build the native sliding-channel conv kernel now (about a second with g++), so the first
# run does not; without a compiler nas-search says so once and uses slower PyTorch kernels.
.venv/bin/python -c 'from nas_search.spaces.scc import native as scc_native; print("native SCC kernel:", "built" if scc_native.library() else "not available")'
echo "nas-search is installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
