"""``python -m daemon.api``: the control API process (:func:`daemon.api.server.main`)."""

import sys

from daemon.api.server import main

sys.exit(main())
