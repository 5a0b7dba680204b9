#!/usr/bin/env bash
# Install, then run the whole test suite (Postgres tests skip when no server is reachable,
# unless LOOMGRAPH_REQUIRE_POSTGRES=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${PYTHON:-python3}" -m pytest -q "$@"
