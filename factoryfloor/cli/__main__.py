"""``python -m factoryfloor.cli``: the same as the ``factoryfloor`` command."""

import sys

from factoryfloor.cli import main

sys.exit(main())
