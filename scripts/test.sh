#!/usr/bin/env bash
# Install, then run the whole test suite (Postgres tests skip when no server is reachable,
# unless LOOMGRAPH_REQUIRE_POSTGRES=1, as in CI). LOOMGRAPH_INSTALLED=1 skips the install
# when it has just been done (as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LOOMGRAPH_INSTALLED:-}" != 1 ]; then
  bash scripts/install.sh
fi
"${PYTHON:-python3}" -m pytest -q "$@"
