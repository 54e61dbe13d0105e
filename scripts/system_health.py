#!/usr/bin/env python
"""The seed's health tool: ``python scripts/system_health.py [--mode ...]``.

Same options and exit codes as ``robust-collector health``, e.g.
``python scripts/system_health.py --mode continuous --interval 30`` or
``python scripts/system_health.py --mode errors --component RobustDataCollector``.
"""

import sys

from robust_collector.cli import main

if __name__ == "__main__":
    sys.exit(main(["health", *sys.argv[1:]]))
