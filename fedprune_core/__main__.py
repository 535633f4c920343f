"""`python -m fedprune_core ...`: see fedprune_core.cli."""

import logging
import os
import sys

from .cli import main

if __name__ == "__main__":
    code = main()
    if sys.argv[1:2] == ["run"]:
        # A `run` that returned has closed its files and released its lock; the interpreter's
        # own teardown (torch's and the other extensions' destructors) took ~0.6 s more of a
        # 40-s run, so the process leaves at once.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
