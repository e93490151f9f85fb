"""``python -m vaecore``: the ``vaecore`` command."""

import sys

from vaecore.cli import main

sys.exit(main())
