"""``python -m sync.central ingest|migrate ...``: the same as the ``edge-central`` command."""

import sys

from sync.central.cli import main

sys.exit(main())
