"""`python -m loomgraph`: the `loomgraph` command, for an environment whose scripts folder is
not on PATH."""

import sys

from loomgraph.cli.main import main

sys.exit(main())
