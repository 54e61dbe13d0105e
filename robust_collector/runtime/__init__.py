"""The collector's machinery, below the ``Collector`` facade.

``pipeline`` (validate, count, buffer, flush), ``guards`` (breakers, retries, the rate
gate), ``polling`` and ``streaming`` (the two drivers), ``health_loop`` (facts, checks,
heartbeat), ``supervisor`` (every task and thread restarted, never silent), ``store``
(the writer and the runs row), ``status`` (what is reported).
"""

from robust_collector.runtime.status import CollectorStatus, LatestQuote, SymbolStatus
from robust_collector.runtime.supervisor import Supervisor, UnitStatus

__all__ = ["CollectorStatus", "LatestQuote", "Supervisor", "SymbolStatus", "UnitStatus"]
