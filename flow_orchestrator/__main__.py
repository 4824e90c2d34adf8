"""``python -m flow_orchestrator``: the command line."""

import sys

from .cli import main

sys.exit(main())
