#!/usr/bin/env bash
# Install everything loomgraph needs on a fresh Debian/Ubuntu machine (or a Mac with Homebrew):
# Graphviz's `dot` for SVG rendering, then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install graphviz
  else
    echo "install Graphviz (the 'dot' command) with your package manager" >&2; exit 1
  fi
fi
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
