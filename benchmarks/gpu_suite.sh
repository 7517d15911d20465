#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): bash benchmarks/gpu_suite.sh [--smoke] [--only STEP,...] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m benchmarks.gpu_suite "$@"
