"""`python -m ait ...` is the `ait` command."""

import sys

from ait.cli import main

if __name__ == "__main__":
    sys.exit(main())
