"""Data validation: one definition of the rules, two engines that decide alike.

``Validator`` judges a live stream quote by quote (per-symbol state, a few
microseconds per quote); ``validate_frame`` applies the same rules to a polars
DataFrame (files, notebooks) and makes exactly the same decisions. Rule ids,
order and reasons come from ``rules.py``; thresholds from ``ValidationConfig``.
"""

from robust_collector.validation.config import PriceRange, RuleSwitches, ValidationConfig
from robust_collector.validation.frame import (
    DEFAULT_COLUMNS,
    FIELDS,
    OUTPUT_COLUMNS,
    QUOTE_SCHEMA,
    TAQ_COLUMNS,
    FrameResult,
    quotes_frame,
    validate_frame,
)
from robust_collector.validation.rules import RULE_INFO, RULES, RuleInfo
from robust_collector.validation.streaming import (
    ACCEPTED,
    COUNTER_KEYS,
    DUPLICATE,
    Validator,
    Verdict,
)

__all__ = [
    "ACCEPTED",
    "COUNTER_KEYS",
    "DEFAULT_COLUMNS",
    "DUPLICATE",
    "FIELDS",
    "OUTPUT_COLUMNS",
    "QUOTE_SCHEMA",
    "RULES",
    "RULE_INFO",
    "TAQ_COLUMNS",
    "FrameResult",
    "PriceRange",
    "RuleInfo",
    "RuleSwitches",
    "ValidationConfig",
    "Validator",
    "Verdict",
    "quotes_frame",
    "validate_frame",
]
