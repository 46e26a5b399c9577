"""``python -m factoryfloor``: the same as the ``factoryfloor`` command."""

import sys

from factoryfloor.cli import main

sys.exit(main())
