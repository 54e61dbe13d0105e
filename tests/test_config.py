"""Config loading: documented defaults, the seed's file, and every error path."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from robust_collector.config import Config, load_config
from robust_collector.errors import ConfigError
from robust_collector.schema import describe

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "config" / "spy_qqq_config.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_without_a_file(tmp_path):
    c = load_config(None, base_dir=tmp_path)
    assert c.symbols == ("SPY", "QQQ", "IWM")
    rt = c.realtime_data
    assert (rt.enabled, rt.collect_interval_seconds, rt.buffer_size) == (True, 1.0, 100)
    assert (rt.retry.max_retries, rt.retry.retry_delay, rt.retry.exponential_backoff) == (
        3,
        1.0,
        True,
    )
    assert rt.validation.max_price_change_pct == 10.0
    assert (rt.validation.min_price, rt.validation.max_price) == (1.0, 10000.0)
    assert rt.health_check.max_errors_per_minute == 10
    assert rt.health_check.max_stale_seconds == 300
    assert (rt.circuit_breaker.failure_threshold, rt.circuit_breaker.timeout_seconds) == (5, 60.0)
    assert rt.circuit_breaker.success_threshold == 3
    assert c.source.type == "simulated"
    assert c.storage.database == str(tmp_path / "data" / "market_data.db")
    assert rt.backup.backup_path == str(tmp_path / "data" / "tick_backups")


def test_seed_config_file_loads_with_the_seed_values(tmp_path):
    c = load_config(SEED_CONFIG, base_dir=tmp_path)
    assert c.realtime_data.health_check.check_interval_seconds == 60
    assert c.realtime_data.backup.backup_to_file is True
    assert c == load_config(None, base_dir=tmp_path)  # the seed's values are the defaults


def test_config_is_frozen(tmp_path):
    c = load_config(None, base_dir=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.realtime_data.buffer_size = 5  # type: ignore[misc]


def test_missing_keys_take_defaults(tmp_path):
    p = write(tmp_path, "realtime_data:\n  retry:\n    max_retries: 5\n")
    c = load_config(p, base_dir=tmp_path)
    assert c.realtime_data.retry.max_retries == 5
    assert c.realtime_data.retry.retry_delay == 1.0
    assert c.realtime_data.buffer_size == 100


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "realtime_data:\n  retry:\n    max_retries: three\n",
            "realtime_data.retry.max_retries: expected an integer >= 0 and <= 1000, got 'three'",
        ),
        (
            "realtime_data:\n  retry:\n    max_retries: -1\n",
            "realtime_data.retry.max_retries: expected an integer >= 0 and <= 1000, got -1",
        ),
        (
            "realtime_data:\n  retry:\n    max_retry: 3\n",
            "realtime_data.retry.max_retry: unknown key; did you mean 'max_retries'?",
        ),
        (
            "realtime_data:\n  collect_interval_seconds: 0\n",
            "realtime_data.collect_interval_seconds: expected a number > 0 and <= 86400, got 0",
        ),
        (
            "realtime_data:\n  enabled: yes please\n",
            "realtime_data.enabled: expected true or false, got 'yes please'",
        ),
        (
            "realtime_data:\n  buffer_size: 1.5\n",
            "realtime_data.buffer_size: expected an integer >= 1 and <= 1000000, got 1.5",
        ),
        (
            "realtime_data:\n  circuit_breaker:\n    enabled: 1\n",
            "realtime_data.circuit_breaker.enabled: expected true or false, got 1",
        ),
        (
            "realtime_data:\n  retry:\n    jitter: random\n",
            "realtime_data.retry.jitter: expected one of 'none', 'full', 'equal', 'decorrelated', got 'random'",
        ),
        (
            "realtime_data:\n  validation:\n    min_price: 20000\n",
            "realtime_data.validation.min_price: expected a number below max_price (10000.0), got 20000.0",
        ),
        ("realtime_data: 5\n", "realtime_data: expected a mapping, got 5"),
        ("symbols: SPY\n", "symbols: expected a list, got 'SPY'"),
        ("symbols: []\n", "symbols: expected at least one symbol, got []"),
        ("symbols: [SPY, SPY]\n", "symbols[1]: 'SPY' is listed twice"),
        ("symbols: [SPY, 5]\n", "symbols[1]: expected a non-empty string, got 5"),
        (
            "source:\n  type: bloomberg\n",
            "source.type: expected one of 'simulated', 'http', 'replay', 'websocket', got 'bloomberg'",
        ),
        ("source:\n  seeed: 1\n", "source.seeed: unknown key; did you mean 'seed'?"),
        (
            "source:\n  faults:\n    error_rate: 2\n",
            "source.faults.error_rate: expected a number >= 0 and <= 1, got 2",
        ),
        (
            "source:\n  faults:\n    outages: [{start_seconds: 1}]\n",
            "source.faults.outages[0].duration_seconds: required key is missing",
        ),
        (
            "storage:\n  backend: mysql\n",
            "storage.backend: expected one of 'sqlite', 'postgresql', got 'mysql'",
        ),
        ("realtme_data: {}\n", "realtme_data: unknown key; did you mean 'realtime_data'?"),
        ("- a\n- b\n", "expected a mapping at the top level, got ['a', 'b']"),
        ("realtime_data: {retry: [\n", "invalid YAML"),
        (
            "realtime_data:\n  health_check:\n    max_stale_seconds: .nan\n",
            "realtime_data.health_check.max_stale_seconds: expected a finite number, got nan",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, yaml_text, message):
    p = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(p, base_dir=tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(p) + ": ")
    assert message in text


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_refused_safe_load_only(tmp_path):
    p = write(tmp_path, "symbols: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)


def test_foreign_top_level_sections_are_left_alone(tmp_path):
    p = write(tmp_path, "trading:\n  strategy: momentum\nsymbols: [AAPL]\n")
    assert load_config(p, base_dir=tmp_path).symbols == ("AAPL",)


def test_overrides_merge_deeply(tmp_path):
    c = load_config(
        SEED_CONFIG, base_dir=tmp_path, overrides={"realtime_data": {"retry": {"max_retries": 7}}}
    )
    assert c.realtime_data.retry.max_retries == 7
    assert c.realtime_data.retry.retry_delay == 1.0


def test_relative_paths_resolve_against_base_dir_absolute_paths_stay(tmp_path):
    c = load_config(None, base_dir=tmp_path, overrides={"storage": {"database": "/x/y.db"}})
    assert c.storage.database == "/x/y.db"
    assert c.realtime_data.backup.backup_path == str(tmp_path / "data" / "tick_backups")


def test_every_key_has_a_doc():
    keys = describe(Config)
    assert len(keys) > 40
    missing = [k.path for k in keys if not k.doc]
    assert missing == []


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    config = load_config(path)
    assert config.symbols


def test_a_config_survives_a_round_trip_through_plain_data():
    from robust_collector.config import config_from_dict

    config = load_config(None)
    assert config_from_dict(config.as_dict()) == config
    fleet = config_from_dict({"storage": {"backend": "postgresql", "instance": "east"}})
    assert config_from_dict(fleet.as_dict()) == fleet


# --- the input boundary (issue 14): hostile values are one line, never a traceback ----------

_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "symbols: [SPY]\n"
    "realtime_data: {buffer_size: *e}\n"
)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"realtime_data: {buffer_size: 18446744073709551616}\n", "64-bit range"),
        (b"realtime_data: {buffer_size: 9223372036854775808}\n", "64-bit range"),
        (b"realtime_data: {health_check: {max_stale_seconds: 1.0e+999}}\n", "finite number"),
        (b'symbols: ["SP\\ud83dY"]\n', "symbols[0]: expected text without control"),
        (b'symbols: ["SP\\0Y"]\n', "symbols[0]: expected text without control"),
        (b'symbols: ["SP\\e[2JY"]\n', "symbols[0]: expected text without control"),
        (b"symbols: [SPY]\n\xff\xfe bad bytes\n", "not UTF-8 text"),
        ("symbols: [SPY]\n".encode("utf-16"), "not UTF-8 text"),
        (_BOMB.encode(), "the YAML expands to more than 100000 values"),
    ],
)
def test_hostile_config_values_are_one_line_errors(tmp_path, raw, message):
    p = tmp_path / "c.yaml"
    p.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and len(text) < 300  # the alias tree is not rendered whole
    text.encode("utf-8")  # printable anywhere
    assert "\x1b" not in text and "\x00" not in text


# --- issue 16: every malformed or unsafe input is one line naming the key, exit 2 -----------
# One case per line: (YAML text or bytes, the start of the expected message).

_HTTP = "source: {type: http, preset: custom, url: 'http://x/{symbol}', fields: {last: p}, "
_CUSTOM = "source: {type: http, preset: custom, fields: {last: p}, "
# fmt: off
REFUSED: list[tuple[str | bytes, str]] = [
    # credentials written literally into the config
    (_HTTP + "headers: {Authorization: 'Bearer abc123def456'}}\n", "source.headers.Authorization: a credential"),
    (_HTTP + "headers: {X-Api-Key: abc123def456}}\n", "source.headers.X-Api-Key: a credential"),
    (_HTTP + "params: {token: abc123def456}}\n", "source.params.token: a credential"),
    (_HTTP + "headers: {X-Whatever: 'Basic dXNlcjpwdw=='}}\n", "source.headers.X-Whatever: a credential"),
    # a placeholder exempts only a value it stands for whole (scheme word at most)
    (_HTTP + "headers: {Authorization: 'Bearer abc123def456 {api_key}'}}\n", "source.headers.Authorization: a credential"),
    (_HTTP + "params: {token: 'abc123def456{api_secret}'}}\n", "source.params.token: a credential"),
    # credentials in a URL: user info, or a query key that names one (percent-encoded too)
    (_CUSTOM + "url: 'http://u:abc123def456@x/{symbol}'}\n", "source.url: a credential may not be written in the config (it is stored with every run): user info"),
    (_CUSTOM + "url: 'http://x/{symbol}?token=abc123def456'}\n", "source.url: a credential may not be written in the config (it is stored with every run): the query parameter 'token'"),
    (_CUSTOM + "url: 'http://x/{symbol}?s=1&api_key=abc123def456'}\n", "source.url: a credential may not be written in the config (it is stored with every run): the query parameter 'api_key'"),
    (_CUSTOM + "url: 'http://x/{symbol}?%61pikey=abc123def456'}\n", "source.url: a credential may not be written in the config (it is stored with every run): the query parameter 'apikey'"),
    (_CUSTOM + "url: 'http://x/{symbol}?token=abc123def456{api_key}'}\n", "source.url: a credential may not be written in the config (it is stored with every run): the query parameter 'token'"),
    ("source: {type: http, preset: alpaca, base_url: 'https://u:abc123def456@x'}\n", "source.base_url: a credential may not be written in the config (it is stored with every run): user info"),
    ("source: {type: http, preset: finnhub, base_url: 'https://x/api?password=abc123def456'}\n", "source.base_url: a credential may not be written in the config (it is stored with every run): the query parameter 'password'"),
    ("source: {type: websocket, preset: polygon, base_url: 'wss://x?secret=abc123def456'}\n", "source.base_url: a credential may not be written in the config (it is stored with every run): the query parameter 'secret'"),
    ("source: {type: websocket, preset: alpaca, refresh_preset: alpaca, refresh_base_url: 'https://x?key=abc123def456'}\n", "source.refresh_base_url: a credential may not be written"),
    ("source: {type: http, preset: alpaca, proxy: 'http://u:abc123def456@proxy:3128'}\n", "source.proxy: a credential may not be written in the config (it is stored with every run): user info (user:password@); set source.proxy: env"),
    ("source: {type: http, preset: alpaca, proxy: 'ftp://u:abc123def456@proxy'}\n", "source.proxy: a credential may not be written"),  # refused before the scheme error quotes it
    ("storage: {database: 'host=h password=pw123456'}\n", "storage.database: expected a SQLite file path"),
    ("storage: {database: 'postgresql://u:pw@h/db'}\n", "storage.database: expected a SQLite file path"),
    # a database path that is not a regular file (the heartbeat would land beside it)
    ("storage: {database: /dev/null}\n", "storage.database: '/dev/null' is not a regular file"),
    ("storage: {database: /tmp}\n", "storage.database: '/tmp' is a folder"),
    # wrong container types
    ("source: {type: [http]}\n", "source.type: expected one of 'simulated', 'http'"),
    ("source: {type: {a: 1}}\n", "source.type: expected one of 'simulated', 'http'"),
    ("source: [http]\n", "source: expected a mapping, got ['http']"),
    # numbers past their bounds (every number has one; see docs/configuration.md)
    ("source: {seed: 18446744073709551617}\n", "source.seed: expected an integer"),
    ("source: {type: http, preset: alpaca, max_connections: 18446744073709551617}\n", "source.max_connections: expected an integer"),
    ("source: {type: http, preset: alpaca, max_connections: 2000000000}\n", "source.max_connections: expected an integer >= 1 and <= 1000000000"),
    ("realtime_data: {buffer_size: 18446744073709551616}\n", "realtime_data.buffer_size: expected an integer"),
    ("realtime_data: {buffer_size: 2000000}\n", "realtime_data.buffer_size: expected an integer >= 1 and <= 1000000"),
    ("realtime_data: {validation: {spread_window: 18446744073709551616}}\n", "realtime_data.validation.spread_window: expected an integer"),
    ("storage: {queue_max_batches: 9223372036854775807}\n", "storage.queue_max_batches: expected an integer >= 1 and <= 100000"),
    ("realtime_data: {health_check: {history_size: 9223372036854775808}}\n", "realtime_data.health_check.history_size: expected an integer"),
    ("realtime_data: {health_check: {max_recent_errors: 9223372036854775807}}\n", "realtime_data.health_check.max_recent_errors: expected an integer >= 1 and <= 100000"),
    ("storage: {write_timeout_seconds: 1.0e+308}\n", "storage.write_timeout_seconds: expected a number > 0 and <= 3600"),
    ("realtime_data: {backup: {max_file_mb: 1.0e+308}}\n", "realtime_data.backup.max_file_mb: expected a number >= 0.01"),
    ("realtime_data: {backup: {max_file_mb: 1.0e-30}}\n", "realtime_data.backup.max_file_mb: expected a number >= 0.01"),
    ("realtime_data: {validation: {future_tolerance_seconds: 1.0e+308}}\n", "realtime_data.validation.future_tolerance_seconds: expected a number >= 0 and <= 1000000000"),
    ("source: {type: websocket, preset: alpaca, ping_interval_seconds: 1.0e+300}\n", "source.ping_interval_seconds: expected a number > 0 and <= 1000000000"),
    ("source: {faults: {symbol_latency_seconds: {SPY: 1.0e+300}}}\n", "source.faults.symbol_latency_seconds.SPY: expected a number >= 0 and <= 1000000000"),
    # fields that must agree
    ("realtime_data: {health_check: {degraded_success_rate: 0.2, unhealthy_success_rate: 0.5}}\n", "realtime_data.health_check.degraded_success_rate: 0.2 is below unhealthy_success_rate"),
    ("realtime_data: {retry: {retry_delay: 60, max_delay: 30}}\n", "realtime_data.retry.retry_delay: 60 is above max_delay"),
    ("realtime_data: {validation: {min_price: 20000}}\n", "realtime_data.validation.min_price: expected a number below max_price"),
    # YAML: duplicate keys, alias bombs
    ("symbols: [SPY]\nsymbols: [QQQ]\n", "line 2, column 1: key 'symbols' is given twice"),
    ("realtime_data:\n  buffer_size: 5\n  buffer_size: 6\n", "line 3, column 3: key 'buffer_size' is given twice"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n", "the YAML expands to more than 100000 values"),
    # symbols: a documented character set and length
    ('symbols: ["SP\\0Y"]\n', "symbols[0]: expected text without control"),
    ('symbols: ["SP\\r\\nY"]\n', "symbols[0]: expected text without control"),
    ('symbols: ["SP\\tY"]\n', "symbols[0]: expected text without control"),
    ("symbols: ['.']\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    ("symbols: ['..']\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    ("symbols: ['../v2/account']\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    ("symbols: ['SPY?x=1']\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    ("symbols: ['SPY#']\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    ("symbols: [" + "A" * 100_000 + "]\n", "symbols[0]: expected a symbol of 1 to 32 characters"),
    # encodings
    (b"symbols: [SPY]\n\xff\xfe bad bytes\n", "not UTF-8 text"),
    ("symbols: [SPY]\n".encode("utf-16"), "not UTF-8 text"),
]
# fmt: on

# real tickers that the symbol rule must keep accepting
GOOD_SYMBOLS = ["SPY", "BRK.B", "BF-B", "^VIX", "BTC/USD", "ES=F", "EUR/USD", "6E:CME", "A" * 32]


@pytest.mark.parametrize(("raw", "message"), REFUSED, ids=range(len(REFUSED)))
def test_issue16_refused_config_is_one_line_naming_the_key(tmp_path, raw, message):
    p = tmp_path / "c.yaml"
    p.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    with pytest.raises(ConfigError) as info:
        load_config(p, base_dir=tmp_path)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    assert text.startswith(f"{p}: {message}"), text
    assert "abc123def456" not in text and "pw123456" not in text


def test_issue16_templated_credentials_in_headers_are_accepted(tmp_path):
    p = write(tmp_path, _HTTP + "headers: {Authorization: 'Bearer {api_key}'}}\n")
    assert load_config(p, base_dir=tmp_path).source.headers["Authorization"] == "Bearer {api_key}"


# credentials given the environment-variable way, and URLs that only look like they hold one
# fmt: off
ACCEPTED_SOURCES: list[str] = [
    _HTTP + "headers: {Authorization: 'Bearer {api_key}'}}",
    _HTTP + "headers: {Authorization: 'token   {api_key}'}}",
    _HTTP + "headers: {Authorization: ' Apikey {api_key} '}}",
    _HTTP + "headers: {X-Api-Key: '{api_key}', X-Api-Secret: '{api_secret}', Accept: application/json}}",
    _HTTP + "params: {apikey: '{api_key}', s: '{symbol}'}}",
    _CUSTOM + "url: 'http://x/{symbol}?token={api_key}&fields=last'}",
    _CUSTOM + "url: 'http://{api_key}:{api_secret}@x/{symbol}'}",
    _CUSTOM + "url: '{base_url}/q/{symbol}?format=json', base_url: 'https://api.example.com:8443/v1'}",
    _CUSTOM + "url: 'http://x/{symbol}?token='}",
    "{type: http, preset: alpaca, base_url: 'https://data.example.com'}",
    "{type: http, preset: alpaca, proxy: env}",
    "{type: http, preset: alpaca, proxy: none}",
    "{type: http, preset: alpaca, proxy: 'http://proxy.internal:3128'}",
    "{type: websocket, preset: polygon, base_url: 'wss://ws.example.com'}",
]
# fmt: on


@pytest.mark.parametrize("source", ACCEPTED_SOURCES, ids=range(len(ACCEPTED_SOURCES)))
def test_issue16_credentials_given_the_environment_way_are_accepted(tmp_path, source):
    text = source if source.startswith("source:") else f"source: {source}"
    load_config(write(tmp_path, text + "\n"), base_dir=tmp_path)


@pytest.mark.parametrize(("raw", "message"), REFUSED, ids=range(len(REFUSED)))
def test_issue16_the_cli_answers_every_refused_config_with_one_line_and_exit_2(
    tmp_path, capsys, raw, message
):
    from robust_collector.cli import main

    p = tmp_path / "c.yaml"
    p.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    assert main(["health", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_issue16_real_tickers_are_accepted(tmp_path):
    p = write(tmp_path, "symbols: [" + ", ".join(f"'{s}'" for s in GOOD_SYMBOLS) + "]\n")
    assert load_config(p, base_dir=tmp_path).symbols == tuple(GOOD_SYMBOLS)


@pytest.mark.parametrize("kind", ["fifo", "folder", "devzero", "big"])
def test_issue16_config_paths_that_are_not_small_regular_files_are_refused(tmp_path, kind):
    p = tmp_path / "c.yaml"
    if kind == "fifo":
        os.mkfifo(p)  # opening it to read would block forever
    elif kind == "folder":
        p.mkdir()
    elif kind == "devzero":
        p = Path("/dev/zero")  # reading it would fill memory
    else:
        p.write_bytes(b"# " + b"x" * 1_000_000 + b"\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{p}: ")
    assert "regular file" in text or "folder" in text or "larger than" in text, text


def test_backup_to_file_is_a_deprecated_alias_of_enabled(tmp_path, caplog):
    from robust_collector.config import config_from_dict

    with caplog.at_level("WARNING", logger="robust_collector.config"):
        seed = config_from_dict({"realtime_data": {"backup": {"backup_to_file": True}}})
    assert seed.realtime_data.backup.active and not caplog.records  # the seed's shape: silent
    with caplog.at_level("WARNING", logger="robust_collector.config"):
        off = config_from_dict({"realtime_data": {"backup": {"backup_to_file": False}}})
    assert not off.realtime_data.backup.active  # one switch, read in one place
    assert [r.getMessage() for r in caplog.records] == [
        "realtime_data.backup.backup_to_file: false is deprecated and turns backups off; "
        "write realtime_data.backup.enabled: false instead"
    ]
    assert not config_from_dict(
        {"realtime_data": {"backup": {"enabled": False}}}
    ).realtime_data.backup.active
