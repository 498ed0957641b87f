"""``python -m rdzv``: the ``rdzv`` command."""

import sys

from rdzv.cli import main

sys.exit(main())
