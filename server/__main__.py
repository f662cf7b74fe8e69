"""``python -m server`` runs the ``bavlio`` command line."""

import sys

from server.cli import main

sys.exit(main())
