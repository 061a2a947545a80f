#!/usr/bin/env bash
# Create .venv and install mmrag into it with the given extras (default: offline).
# Re-running is cheap: pip runs again only when pyproject.toml or the extras change.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-offline}"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mmrag needs Python >= 3.11; '$py' is $("$py" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.mmrag-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing mmrag[$extras] into .venv (first time: a few minutes, torch is large)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -e ".[$extras]"
  echo "$want" > "$stamp"
fi
