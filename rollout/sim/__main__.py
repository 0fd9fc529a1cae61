"""``python -m rollout.sim``: the same as ``rollout sim``."""

import sys

from rollout.sim.cli import main

sys.exit(main(sys.argv[1:]))
