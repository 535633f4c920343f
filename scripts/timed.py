"""Run a command; then print its wall time and CPU time (user + sys of the command and of every
process it waited for), so `make test` says what it cost: python scripts/timed.py LABEL CMD..."""

import resource
import subprocess
import sys
import time

label, command = sys.argv[1], sys.argv[2:]
start = time.monotonic()
try:
    status = subprocess.call(command)
except KeyboardInterrupt:
    status = 130
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{label}: {wall / 60:.1f} min wall, {(usage.ru_utime + usage.ru_stime) / 60:.1f} "
      f"CPU-minutes (user {usage.ru_utime / 60:.1f} + sys {usage.ru_stime / 60:.1f})",
      flush=True)
sys.exit(status)
