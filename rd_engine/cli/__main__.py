"""`python -m rd_engine.cli`: the same as the `rd-engine` command."""

import sys

from rd_engine.cli import main

sys.exit(main())
