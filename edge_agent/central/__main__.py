"""``python -m edge_agent.central ingest ...`` until the agent's CLI carries ``central``."""

import sys

from edge_agent.central.cli import main

sys.exit(main())
