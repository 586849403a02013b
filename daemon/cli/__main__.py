"""``python -m daemon.cli ...``: the ``cappuccino`` command line."""

from daemon.cli import main

main()
