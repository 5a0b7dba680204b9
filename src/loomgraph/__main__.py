"""`python -m loomgraph`: the `loomgraph` command, for an environment whose scripts folder is
not on PATH."""

import sys

from loomgraph.cli.main import main

if __name__ == "__main__":  # importing the module (an import walk, a doc tool) runs nothing
    sys.exit(main())
