#!/usr/bin/env bash
# Set up (with test and lint dependencies), run the static checks (scripts/lint.sh) and the
# whole test suite on CPU. The tests run even when a check fails; the exit status is the
# tests' when they fail, else the checks'. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
lint_status=0
bash scripts/lint.sh || lint_status=$?
test_status=0
.venv/bin/python -m pytest -q "$@" || test_status=$?
if [[ $test_status -ne 0 ]]; then exit "$test_status"; fi
if [[ $lint_status -ne 0 ]]; then echo "tests passed, but the static checks failed (scripts/lint.sh)" >&2; fi
exit "$lint_status"
