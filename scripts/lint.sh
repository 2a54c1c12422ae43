#!/usr/bin/env bash
# Static checks, from the virtualenv that scripts/setup.sh --dev creates: ruff (lint rules and
# formatting), mypy (types; strict for spec, units, errors, spaces/ and hw_models/) and
# import-linter (the layer contracts of pyproject.toml). Every check runs; the exit status is
# 1 when any of them failed. Settings: [tool.ruff], [tool.mypy], [tool.importlinter] in
# pyproject.toml.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
failed=()
check() {
  local name=$1
  shift
  echo "== $name: $*"
  if "$@"; then echo "== $name: ok"; else failed+=("$name"); echo "== $name: FAILED"; fi
}
check "ruff check" "$BIN/ruff" check --output-format concise .
check "ruff format" "$BIN/ruff" format --check .
check "mypy" "$BIN/mypy" nas_search
check "lint-imports" "$BIN/lint-imports"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "lint: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all checks passed"
