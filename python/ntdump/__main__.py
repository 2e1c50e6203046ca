"""``python -m ntdump``: the same command line as the ``ntdump`` script."""

import sys

from .cli import main

sys.exit(main())
