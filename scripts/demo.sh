#!/usr/bin/env bash
# Set up, ingest the sample library (data/library) into the embedded Milvus Lite store, and run
# the demo queries (data/eval/demo_queries.txt). Extra arguments go to `mmrag demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh offline,image,audio,video
exec .venv/bin/mmrag demo "$@"
