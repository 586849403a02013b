"""Read-only views of a runtime root: the dashboard (collector and rendering), the PNG
report, the ledger reader and the ``status.json`` builder. Views never import the command
line (:mod:`daemon.cli`) nor start anything."""
