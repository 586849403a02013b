#!/usr/bin/env bash
# Create the study if needed, make it current (sync + SIGHUP), and start the supervisor in the
# background, or realign the running one.
#   bin/start_training.sh --study NAME --n-trials N --workers W [--root DIR] [--config FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/cappuccino ] || bin/setup
exec .venv/bin/cappuccino start-training "$@"
