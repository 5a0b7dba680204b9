#!/usr/bin/env bash
# The static checks CI runs (after scripts/install.sh): ruff, ruff format, mypy (strict) and
# import-linter's layering contracts (pyproject.toml, docs/architecture.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests examples bench
ruff format --check src tests examples bench
mypy
lint-imports
