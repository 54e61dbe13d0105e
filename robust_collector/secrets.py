"""Keep API keys out of logs, error tables, health output and exceptions.

Sources register every secret they read from the environment; every message that
leaves the collector (error rows, health reasons, log lines) goes through
``redact``, which replaces each registered value with ``***``.
"""

from __future__ import annotations

import threading

from robust_collector.boundary import MAX_TEXT, clean_text

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so ``redact`` hides it (values under 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    if not _secrets:
        return text
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "***")
    return text


def scrub(text: object, limit: int = MAX_TEXT) -> str:
    """Outside text made safe to store, log and print: secrets redacted first (so a cut
    never leaves part of one), then surrogates, NUL and escapes cleaned, length capped."""
    return clean_text(redact(text if isinstance(text, str) else clean_text(text, limit * 4)), limit)
