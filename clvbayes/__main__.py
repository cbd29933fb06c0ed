"""``python -m clvbayes``: the ``clvbayes`` command (:func:`clvbayes.cli.main`)."""

import sys

from clvbayes.cli import main

sys.exit(main())
