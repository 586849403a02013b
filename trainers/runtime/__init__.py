"""The runtime layer every component imports (the bottom of the process model).

* :mod:`~trainers.runtime.layout`: the one place that knows every path under the runtime
  root (``train_results/`` by default) and which component writes it.
* :mod:`~trainers.runtime.pidlock`: the one pid lock (``flock`` on a file holding the
  holder's pid) and its holder lookup.
* :mod:`~trainers.runtime.heartbeat`: the one heartbeat format.
* :mod:`~trainers.runtime.logs`: the one logging setup (structlog JSON lines).
* :mod:`~trainers.runtime.current_study`: the ``.current_study`` reader and writer.

Nothing here imports torch, so the supervisor and the CLI stay light.
"""
