"""Market-data sources, picked by ``source.type`` in the config."""

from robust_collector.sources.base import Source, create_source, register_source
from robust_collector.sources.simulated import FaultState, SimulatedSource

__all__ = ["FaultState", "SimulatedSource", "Source", "create_source", "register_source"]
