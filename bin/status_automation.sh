#!/usr/bin/env bash
# Show the status of the supervisor, its children, the study, the ensemble and the trader.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v systemctl >/dev/null 2>&1 && systemctl cat cappuccino.service >/dev/null 2>&1; then
  systemctl status cappuccino.service --no-pager || true
fi
exec .venv/bin/cappuccino status "$@"
