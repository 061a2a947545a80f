#!/usr/bin/env bash
# Set up with the dev tools, lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tesseract >/dev/null; then  # the OCR tests read real printed words
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing tesseract-ocr (Debian package) for the OCR tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null
  else
    echo "the tests need Tesseract: sudo apt-get install tesseract-ocr (or: brew install tesseract)" >&2
    exit 1
  fi
fi
bash scripts/setup.sh offline,dev,image
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
