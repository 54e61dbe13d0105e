#!/usr/bin/env python
"""The seed's robustness check: ``python scripts/test_robustness.py [--config PATH]``.

Runs ``robust-collector drill``: the five failure scenarios, live, against the
real pipeline with your config's thresholds. Exit code 0 only if all pass.
"""

import sys

from robust_collector.cli import main

if __name__ == "__main__":
    sys.exit(main(["drill", *sys.argv[1:]]))
