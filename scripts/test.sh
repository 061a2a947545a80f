#!/usr/bin/env bash
# Set up with the dev tools, lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The OCR tests read real printed words (Tesseract); the speech tests speak real sentences; the
# web page's test drives a real browser (Debian's chromium, through Playwright).
missing=()
command -v tesseract >/dev/null || missing+=(tesseract-ocr)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (Debian packages) for the OCR, speech and browser tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: sudo apt-get install ${missing[*]} (or brew install tesseract espeak-ng)" >&2
    exit 1
  fi
fi
bash scripts/setup.sh offline,dev,image,audio,video,openai,serve,eval,multilingual,bulk,ray,server-tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
