"""``python -m score_sde``: the same program as the ``score-sde`` command."""

import sys

from score_sde.cli import main

sys.exit(main())
