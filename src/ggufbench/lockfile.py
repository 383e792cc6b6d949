"""`python -m ggufbench.lockfile refresh`: the hub lock's command line (sources/lock_refresh.py)."""

import sys

from .sources.lock_refresh import main

if __name__ == "__main__":
    sys.exit(main())
