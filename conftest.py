"""The whole suite (tests and the notebooks nbmake runs) writes to temp folders with short
defaults: ``RC_TMP=1`` says so to ``robust_collector.analysis.under_test()``, and every
notebook kernel started from this process inherits it."""

import os

os.environ.setdefault("RC_TMP", "1")
