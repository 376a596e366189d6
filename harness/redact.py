"""Secret redaction. Every secret the harness learns is registered here, and every
output path (logs, reports, JUnit, metrics, artifacts) passes text through :func:`redact`."""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: Shapes that are secrets whether or not we registered them: Helix user keys, bearer headers.
_SHAPES = re.compile(r"\bhl-[A-Za-z0-9_-]{8,}|(?i:(?<=bearer )[A-Za-z0-9._~+/=-]{8,})|(?i:(?<=HELIX_API_KEY=)\S+)")


def register(secret: str | None) -> None:
    """Remember a secret value (ignores empty and very short values)."""
    global _pattern
    if not secret or len(secret) < 6:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _SHAPES.sub(MASK, text)


def redact_bytes(data: bytes) -> bytes:
    return redact(data.decode("utf-8", "replace")).encode("utf-8")


def known_secrets() -> list[str]:
    with _lock:
        return sorted(_secrets)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not hide the record
            message = str(record.msg)
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        # A traceback (log.exception, exc_info=True) is formatted later by each handler, from the
        # exception itself: format it now, redacted; formatters use a set exc_text as it is.
        if record.exc_info and not record.exc_text:
            try:
                record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
            except Exception:  # noqa: BLE001 - never lose the record over its traceback
                record.exc_text = "<traceback unavailable>"
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


_factory_installed = False


def install_logging_filter() -> None:
    """Redact every log record at creation, whichever logger or handler it goes to
    (pytest's capture handlers, JUnit system-out, the HTML report)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()
    redactor = RedactingFilter()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        redactor.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True
