# Sourced by bin/{start,stop,status}_automation.sh. Sets SYSTEMCTL to the systemctl command
# that manages an installed cappuccino unit: the user manager's (`systemctl --user`, the
# install of systemd/INSTALL.md) first, then the system manager's; empty when neither has
# the unit (the scripts then manage a background supervisor themselves).
SYSTEMCTL=()
if command -v systemctl >/dev/null 2>&1; then
  if systemctl --user cat cappuccino.service >/dev/null 2>&1; then
    SYSTEMCTL=(systemctl --user)
  elif systemctl cat cappuccino.service >/dev/null 2>&1; then
    SYSTEMCTL=(systemctl)
  fi
fi
