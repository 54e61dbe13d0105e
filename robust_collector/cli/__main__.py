"""``python -m robust_collector.cli``: the same as the ``robust-collector`` command."""

import sys

from robust_collector.cli import main

sys.exit(main())
