#!/usr/bin/env bash
# Install everything loomgraph needs on a fresh Debian/Ubuntu machine (or a Mac with Homebrew):
# the Debian packages below, then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: Graphviz's `dot` (rendering) and the system Chromium with its driver (the
# run viewer's browser tests drive it; nothing downloads a browser at test time).
NEED=()
command -v dot >/dev/null 2>&1 || NEED+=(graphviz)
command -v chromium >/dev/null 2>&1 || NEED+=(chromium)
command -v chromedriver >/dev/null 2>&1 || NEED+=(chromium-driver)
if [ "${#NEED[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${NEED[@]}" >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install graphviz
  else
    echo "install with your package manager: ${NEED[*]}" >&2; exit 1
  fi
fi
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
