"""Keep API keys and database passwords out of logs, error tables, health output and exceptions.

The one place where credentials are hidden. Sources and the storage register every
secret they read (``register_secret``, ``register_url_secrets``); every message that
leaves the collector (error rows, health reasons, log lines, CLI output) goes through
``redact``, which

- masks the password of every PostgreSQL connection string form libpq accepts, even
  unregistered ones: ``postgresql://user:PW@host/db`` (also with an unencoded ``#`` or a
  malformed rest), ``?password=PW`` query parameters (also ``?%70assword=PW``: libpq
  decodes the name) and keyword DSNs
  ``host=h password=PW`` (``mask_credentials``);
- replaces every registered secret with ``***``, and also every run of 8 or more
  characters that is a piece of one, so a secret cut short (an API's text truncated
  before it reached us, a library's shortened debug frame) still never shows.

``scrub`` redacts first and only then cleans and cuts, so a cut never leaves part of a
secret. ``install_log_filters`` puts a filter on the loggers of the libraries we use
(websockets, httpx, httpcore, psycopg) that masks records holding a secret, a piece of
one, or an authentication frame; it runs when this module is imported. The CLI also puts
``SafeLogFilter`` on its log handlers (``install_handler_filter``): every record, from
any logger, is redacted and then cleaned of newlines and escapes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import unquote

from robust_collector.boundary import MAX_TEXT, clean_text

__all__ = [
    "FRAGMENT",
    "HIDDEN_RECORD",
    "LIBRARY_LOGGERS",
    "SafeLogFilter",
    "SecretLogFilter",
    "install_handler_filter",
    "install_log_filters",
    "mask_credentials",
    "mask_url",
    "redact",
    "register_secret",
    "register_url_secrets",
    "scrub",
]

FRAGMENT = 8  # a run this long of a secret's characters counts as the secret
MASK = "***"
HIDDEN_RECORD = "[log record hidden: it held a credential or an authentication frame]"

_lock = threading.Lock()
_secrets: set[str] = set()
_grams: frozenset[str] = frozenset()  # every FRAGMENT-long piece of every long secret
_short: tuple[str, ...] = ()  # secrets shorter than FRAGMENT: matched whole

# postgresql://user:PASSWORD@host... : libpq ends the user info at the first '/' (a '#'
# or '?' is part of the password for libpq, not a fragment or query as urlsplit thinks);
# greedy up to the last '@' before a '/' or a blank, so a malformed rest is masked too
_URL_USERINFO = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)(?P<pw>[^\s/]*)@", re.IGNORECASE
)
# password=PW and sslpassword=PW: query parameters (end at '&') and keyword DSNs
# (end at a blank; a quoted value ends at its closing quote)
_KEYWORD = re.compile(
    r"(?P<head>(?<![a-z0-9_])(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^\s&'\"]*)",
    re.IGNORECASE,
)
# a query parameter whose name is percent-encoded: libpq decodes names as well as values,
# so ?%70assword=PW is a password too (matched whole, then its decoded name is checked)
_ENCODED_KEY = re.compile(
    r"(?P<head>[?&](?P<key>[^=&#\s]*%[0-9a-f]{2}[^=&#\s]*)=)(?P<pw>[^\s&]*)", re.IGNORECASE
)
_PASSWORD_KEYS = ("password", "sslpassword")


def _is_password_key(key: str) -> bool:
    """True when the query parameter name ``key``, percent-decoded, names a password."""
    return unquote(key).strip().lower() in _PASSWORD_KEYS


# authentication messages sent over a stream (alpaca: {"action": "auth", "key": ...,
# "secret": ...}; polygon: {"action": "auth", "params": KEY}), however a library shortens them
_AUTH_FRAME = re.compile(
    r"""["']action["']\s*:\s*["']auth|["'](?:key|secret|api_?key|token|password)["']\s*:""",
    re.IGNORECASE,
)

LIBRARY_LOGGERS = (
    "websockets",
    "websockets.client",
    "websockets.server",
    "websockets.protocol",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "psycopg",
    "psycopg.pool",
    "psycopg.pq",
)


def register_secret(value: str | None) -> None:
    """Remember ``value`` so ``redact`` hides it and its pieces (under 4 characters: ignored,
    it would mask ordinary words)."""
    if not value or len(value) < 4:
        return
    global _grams, _short
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        grams = set(_grams)
        grams.update(value[i : i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1))
        _grams = frozenset(grams)
        _short = tuple(sorted((s for s in _secrets if len(s) < FRAGMENT), key=len, reverse=True))


def _whole_url_password(url: str) -> tuple[int, int] | None:
    """Where the password of a whole URL lies (between the user's ':' and the last '@'
    before the path), also when it holds blanks or other characters a URL may not."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    end = url.find("/", start)
    host = url[start : end if end >= 0 else len(url)]
    at = host.rfind("@")
    colon = host.find(":", 0, at) if at > 0 else -1
    if colon < 0:
        return None
    return start + colon + 1, start + at


def url_passwords(url: str) -> list[str]:
    """Every password a connection string carries, as written and percent-decoded."""
    found: list[str] = []
    span = _whole_url_password(url)
    if span is not None:
        found.append(url[span[0] : span[1]])
    for m in _URL_USERINFO.finditer(url):
        found.append(m.group("pw"))
    for m in _KEYWORD.finditer(url):
        pw = m.group("pw")
        if pw.startswith("'"):
            pw = pw.strip("'").replace("\\'", "'").replace("\\\\", "\\")
        found.append(pw)
    for m in _ENCODED_KEY.finditer(url):
        if _is_password_key(m.group("key")):
            found.append(m.group("pw"))
    out: list[str] = []
    for pw in found:
        for form in (pw, unquote(pw), unquote(pw.replace("+", " "))):
            if form and form not in out:
                out.append(form)
    return out


def register_url_secrets(url: str | None) -> None:
    """Register the password(s) of a database URL or DSN (and ``PGPASSWORD``, which libpq
    reads too), so an echo of them anywhere, whole or in part, is redacted."""
    for pw in url_passwords(url or ""):
        register_secret(pw)
    register_secret(os.environ.get("PGPASSWORD"))


def mask_url(url: str) -> str:
    """A whole connection string (URL or DSN) with every password in it shown as ``***``."""
    span = _whole_url_password(url)
    if span is not None:
        url = url[: span[0]] + MASK + url[span[1] :]
    return mask_credentials(url)


def mask_credentials(text: str) -> str:
    """``text`` with the password of every connection string in it shown as ``***``
    (URL user info, ``password=`` query parameters, also with a percent-encoded name such
    as ``?%70assword=``, and keyword DSN entries)."""
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    if "assword" in text or "ASSWORD" in text:
        text = _KEYWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)
    if "%" in text:  # ?%70assword=PW: libpq decodes the name
        text = _ENCODED_KEY.sub(
            lambda m: f"{m.group('head')}{MASK}" if _is_password_key(m.group("key")) else m[0],
            text,
        )
    return text


def _mask_pieces(text: str) -> str:
    """``text`` with every run of registered-secret pieces (``FRAGMENT`` characters or
    more) and every short secret replaced by ``***``."""
    grams, short = _grams, _short
    if grams and len(text) >= FRAGMENT:
        covered = bytearray(len(text))
        hit = False
        for i in range(len(text) - FRAGMENT + 1):
            if text[i : i + FRAGMENT] in grams:
                covered[i : i + FRAGMENT] = b"\x01" * FRAGMENT
                hit = True
        if hit:
            out: list[str] = []
            i = 0
            while i < len(text):
                if covered[i]:
                    while i < len(text) and covered[i]:
                        i += 1
                    out.append(MASK)
                else:
                    j = i
                    while j < len(text) and not covered[j]:
                        j += 1
                    out.append(text[i:j])
                    i = j
            text = "".join(out)
    for s in short:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact(text: str) -> str:
    """``text`` with connection-string passwords, registered secrets and any piece of one
    (``FRAGMENT`` characters or more) replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    return _mask_pieces(mask_credentials(text))


def has_secret(text: str) -> bool:
    """True when ``text`` holds a registered secret, a piece of one or a connection password."""
    return redact(text) != text


def scrub(text: object, limit: int = MAX_TEXT) -> str:
    """Outside text made safe to store, log and print: secrets redacted first (so a cut
    never leaves part of one), then surrogates, NUL and escapes cleaned, length capped."""
    return clean_text(redact(text if isinstance(text, str) else clean_text(text, limit * 4)), limit)


class SecretLogFilter(logging.Filter):
    """Masks a record that holds a secret, a piece of one or an authentication frame:
    libraries log frames and URLs at DEBUG, sometimes shortened past a whole-value match."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: its arguments may hold anything
            record.msg, record.args = HIDDEN_RECORD, None
            return True
        if _AUTH_FRAME.search(message):
            record.msg, record.args = HIDDEN_RECORD, None
        else:
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        if record.exc_info or record.exc_text:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            if _AUTH_FRAME.search(text) or redact(text) != text:
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} (traceback hidden: it held a credential)"
        return True


_FILTER = SecretLogFilter()
LOG_TEXT_LIMIT = 4 * MAX_TEXT  # characters kept of one log message


class SafeLogFilter(logging.Filter):
    """For a handler, so it holds for every logger, registered or not: each record gets the
    secret filter, then its message has newlines, control characters and terminal escapes
    shown escaped (one record is one line; outside text cannot forge log lines or drive
    the terminal) and is capped at ``LOG_TEXT_LIMIT`` characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        _FILTER.filter(record)
        try:
            message = record.getMessage()
        except Exception:  # a broken record: its arguments may hold anything
            record.msg, record.args = HIDDEN_RECORD, None
            return True
        clean = clean_text(message, LOG_TEXT_LIMIT)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_handler_filter(handlers: list[logging.Handler] | None = None) -> None:
    """Put a ``SafeLogFilter`` on ``handlers`` (default: the root logger's). Idempotent."""
    for handler in logging.root.handlers if handlers is None else handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter())


def install_log_filters(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Put the secret filter on the library loggers and every child of theirs that exists
    (a logger's filter does not see its children's records). Idempotent."""
    prefixes = tuple(n + "." for n in names)
    existing = [
        n for n in list(logging.root.manager.loggerDict) if n in names or n.startswith(prefixes)
    ]
    for name in (*names, *existing):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


install_log_filters()
