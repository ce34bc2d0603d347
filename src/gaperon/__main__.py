"""`python -m gaperon` (and `torchrun -m gaperon train ...`) = the `gaperon` command."""

import sys

from gaperon.cli import main

sys.exit(main())
