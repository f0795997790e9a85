"""``python -m sync.central ingest|migrate ...``: the central commands without the agent's CLI."""

import sys

from sync.central.cli import main

sys.exit(main())
