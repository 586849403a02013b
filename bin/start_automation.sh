#!/usr/bin/env bash
# Start the supervisor: via systemd when the cappuccino unit is installed (a user unit,
# `systemctl --user`, or a system unit; bin/_systemd_unit.sh), otherwise in the background
# (log: <root>/logs/supervisor.console). Arguments go to `cappuccino supervise`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${CAPPUCCINO_ROOT:-train_results}
. bin/_systemd_unit.sh
if [ ${#SYSTEMCTL[@]} -gt 0 ]; then
  exec "${SYSTEMCTL[@]}" start cappuccino.service
fi
[ -x .venv/bin/cappuccino ] || bin/setup
pidfile="$ROOT/run/supervisor.pid"
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "supervisor already running: pid $(cat "$pidfile")"; exit 0
fi
mkdir -p "$ROOT/logs"
nohup setsid .venv/bin/cappuccino supervise "$@" >>"$ROOT/logs/supervisor.console" 2>&1 </dev/null &
for _ in $(seq 60); do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "supervisor started: pid $(cat "$pidfile") (log $ROOT/logs/supervisor.console)"; exit 0
  fi
  sleep 0.5
done
echo "supervisor did not start; see $ROOT/logs/supervisor.console" >&2
exit 1
