"""Sources that emit trades: the data kinds in config, replay, HTTP, WebSocket and simulated."""

from __future__ import annotations

from typing import Any

import pytest

from robust_collector.config import config_from_dict
from robust_collector.errors import ConfigError
from robust_collector.sources import create_source, kinds_for, traits_of


def source_cfg(**section: Any) -> Any:
    return config_from_dict({"source": section}).source


# -- config: data kinds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        {"type": "simulated"},
        {"type": "http", "preset": "alpaca"},
        {"type": "websocket", "preset": "polygon"},
        {"type": "replay", "path": "q.csv"},
    ],
    ids=lambda s: s["type"],
)
def test_every_source_collects_quotes_unless_told(section: dict[str, Any]) -> None:
    cfg = source_cfg(**section)
    assert cfg.data == ("quotes",) and dict(cfg.data_by_symbol) == {}
    assert kinds_for(cfg, "SPY") == frozenset({"quotes"})


def test_data_by_symbol_overrides_data_for_its_symbols_only() -> None:
    cfg = source_cfg(
        type="simulated", data=["quotes", "trades"], data_by_symbol={"IWM": ["trades"]}
    )
    assert kinds_for(cfg, "SPY") == {"quotes", "trades"}
    assert kinds_for(cfg, "IWM") == {"trades"}
    # a source (its config) and the traits answer the same
    src = create_source(cfg)
    assert kinds_for(src, "IWM") == {"trades"}
    assert traits_of(src).kinds("IWM") == {"trades"} and traits_of(src).kinds("QQQ") == {
        "quotes",
        "trades",
    }


def test_a_config_without_data_collects_quotes() -> None:
    assert kinds_for(object(), "SPY") == {"quotes"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"type": "simulated", "data": ["bars"]},
            "source.data[0]: expected one of 'quotes', 'trades'",
        ),
        (
            {"type": "simulated", "data": []},
            "source.data: empty; list at least one of quotes, trades",
        ),
        (
            {"type": "simulated", "data_by_symbol": {"SPY": []}},
            "source.data_by_symbol.SPY: empty; list at least one of quotes, trades",
        ),
        (
            {"type": "websocket", "preset": "alpaca", "data_by_symbol": {"SPY": ["ticks"]}},
            "source.data_by_symbol.SPY[0]: expected one of 'quotes', 'trades'",
        ),
        (
            {"type": "http", "preset": "finnhub", "data": ["quotes", "trades"]},
            "source.data: this source cannot collect trades: finnhub's REST API has no "
            "latest-trade endpoint",
        ),
        (
            {
                "type": "http",
                "preset": "custom",
                "url": "{base_url}/q/{symbol}",
                "base_url": "http://127.0.0.1:1",
                "fields": {"last": "p"},
                "data_by_symbol": {"SPY": ["trades"]},
            },
            "source.data_by_symbol.SPY: this source cannot collect trades: the custom preset",
        ),
        ({"type": "replay", "data": ["trades"]}, "source.trades_path: required key is missing"),
        (
            {"type": "replay", "data": ["trades"], "trades_path": "t.csv", "path": "q.csv"},
            "source.path: set, but no symbol's data includes quotes",
        ),
        (
            {"type": "replay", "path": "q.csv", "trades_path": "t.csv"},
            "source.trades_path: set, but no symbol's data includes trades",
        ),
        (
            {"type": "replay", "path": "q.csv", "trade_columns": {"bid": "B"}},
            "source.trade_columns.bid: unknown trade field",
        ),
    ],
)
def test_bad_data_kinds_are_one_line_config_errors(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        source_cfg(**section)
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_replay_needs_only_the_files_its_kinds_read() -> None:
    assert source_cfg(type="replay", data=["trades"], trades_path="t.parquet").path is None
    both = source_cfg(
        type="replay",
        path="q.parquet",
        trades_path="t.parquet",
        data_by_symbol={"SPY": ["quotes", "trades"]},
    )
    assert kinds_for(both, "SPY") == {"quotes", "trades"} and kinds_for(both, "X") == {"quotes"}
