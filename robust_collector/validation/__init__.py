"""Data validation: one definition of the rules, two engines that decide alike.

``Validator`` judges a live stream quote by quote (per-symbol state, a few
microseconds per quote); ``validate_frame`` applies the same rules to a polars
DataFrame (files, notebooks) and makes exactly the same decisions. Rule ids,
order and reasons come from ``rules.py``; thresholds from ``ValidationConfig``.

Trades have their own pair, built the same way: ``TradeValidator`` and
``validate_trade_frame`` (rules in ``trade_rules.py``, thresholds from
``TradeValidationConfig``), plus ``aggregate_same_timestamp`` for analysis.
"""

from robust_collector.validation.config import (
    PriceRange,
    RuleSwitches,
    TradeRuleSwitches,
    TradeValidationConfig,
    TradingHours,
    ValidationConfig,
)
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
from robust_collector.validation.trade_frame import (
    TRADE_FRAME_FIELDS,
    TRADE_SCHEMA,
    TRADE_TAQ_COLUMNS,
    TradeFrameResult,
    aggregate_same_timestamp,
    trades_frame,
    validate_trade_frame,
)
from robust_collector.validation.trade_rules import TRADE_RULE_INFO, TRADE_RULES
from robust_collector.validation.trade_streaming import TRADE_COUNTER_KEYS, TradeValidator

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
    "TRADE_COUNTER_KEYS",
    "TRADE_FRAME_FIELDS",
    "TRADE_RULES",
    "TRADE_RULE_INFO",
    "TRADE_SCHEMA",
    "TRADE_TAQ_COLUMNS",
    "FrameResult",
    "PriceRange",
    "RuleInfo",
    "RuleSwitches",
    "TradeFrameResult",
    "TradeRuleSwitches",
    "TradeValidationConfig",
    "TradeValidator",
    "TradingHours",
    "ValidationConfig",
    "Validator",
    "Verdict",
    "aggregate_same_timestamp",
    "quotes_frame",
    "trades_frame",
    "validate_frame",
    "validate_trade_frame",
]
