#!/usr/bin/env bash
# Show the status of the supervisor, its children, the study, the ensemble and the trader
# (and systemd's view of the unit when it is installed, user or system: bin/_systemd_unit.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bin/_systemd_unit.sh
if [ ${#SYSTEMCTL[@]} -gt 0 ]; then
  "${SYSTEMCTL[@]}" status cappuccino.service --no-pager || true
fi
exec .venv/bin/cappuccino status "$@"
