"""`python -m fedprune_core ...`: see fedprune_core.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
