"""``python -m flow_orchestrator``: the command line.

Where it sits: layer L6 (interfaces).
"""

import sys

from .cli import main

sys.exit(main())
