"""``python -m clvbayes``: the ``clvbayes`` command (:func:`clvbayes.cli.console_main`)."""

import sys

from clvbayes.cli import console_main

sys.exit(console_main())
