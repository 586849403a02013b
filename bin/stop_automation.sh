#!/usr/bin/env bash
# Stop the supervisor (it stops its children first): via systemd when the unit is installed
# (user or system unit; bin/_systemd_unit.sh), otherwise SIGTERM to the pid in
# <root>/run/supervisor.pid, then wait for it to exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${CAPPUCCINO_ROOT:-train_results}
TIMEOUT=${STOP_TIMEOUT:-120}
. bin/_systemd_unit.sh
if [ ${#SYSTEMCTL[@]} -gt 0 ]; then
  exec "${SYSTEMCTL[@]}" stop cappuccino.service
fi
pidfile="$ROOT/run/supervisor.pid"
pid=$(cat "$pidfile" 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "supervisor is not running"; exit 0
fi
kill -TERM "$pid"
for _ in $(seq $((TIMEOUT * 2))); do
  kill -0 "$pid" 2>/dev/null || { echo "supervisor (pid $pid) stopped"; exit 0; }
  sleep 0.5
done
echo "supervisor (pid $pid) still running after ${TIMEOUT}s" >&2
exit 1
