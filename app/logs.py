"""Logging for every process: one JSON object per line (or plain text), with run context,
and secrets redacted on the way out.

Context travels in a contextvar, so a line logged anywhere inside an arq job or a webhook
request (our code or a library's) says which run, story or delivery it belongs to without
each message repeating it. arq runs every job in its own task, and a task copies the context
it was created in, so fields set inside a job never leak into another.

Redaction is the last line of defence: code must not log secrets in the first place, but a
library's exception text or a subprocess's stderr can carry one, and a log line, once
shipped, cannot be taken back.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO, TypeVar, cast

from pydantic import SecretStr

from app.settings import Settings

CONTEXT_FIELDS = ("run", "story", "attempt", "delivery", "event", "installation", "repo", "job")
"""Context fields, in the order a JSON line shows them."""

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8
"""Shorter configured values are not replaced by value (they would blank out ordinary
words); the patterns below still catch anything shaped like a credential."""

_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
_DROPPED_EXTRAS = frozenset({"color_message"})  # uvicorn's ANSI-coloured copy of `msg`

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A PEM private key, whole or cut off (a truncated message still must not show it).
    (
        re.compile(
            r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        REDACTED,
    ),
    # Credentials in a URL: https://x-access-token:<token>@github.com, redis://:<pw>@host.
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    (re.compile(r"(x-access-token:)[^@\s]+@"), rf"\1{REDACTED}@"),
    (
        re.compile(r"([?&](?:api[-_]?key|key|token|access_token|sig)=)[^&\s\"']+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # A GitHub App manifest code (in the exchange's URL): unspent, it fetches the App's key.
    (re.compile(r"(/app-manifests/)[^/\s\"']+"), rf"\1{REDACTED}"),
    # Headers, as text or as a printed dict.
    (
        re.compile(
            r"(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|token|basic)\s+)[^\s\"',]+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(\bx-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1{REDACTED}"),
    # Token shapes: GitHub (ghp_, gho_, ghs_, ghu_, ghr_, fine-grained PATs), JWTs (the
    # App's own), OpenAI/Anthropic/DeepSeek-style `sk-` keys.
    (re.compile(r"gh[opsur]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), REDACTED),
    # A run page token (`app.run_links`): expiry, a dot, 43 characters of HMAC.
    (re.compile(r"\b[0-9]{9,12}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"), REDACTED),
)


# --- context --------------------------------------------------------------------------------

_context: ContextVar[Mapping[str, object] | None] = ContextVar("baro_log_context", default=None)


def current_log_context() -> Mapping[str, object]:
    return _context.get() or {}


def _merged(fields: Mapping[str, object]) -> Mapping[str, object]:
    return {**current_log_context(), **{k: v for k, v in fields.items() if v is not None}}


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every line logged inside the block (and in tasks it starts) carries `fields`."""
    token = _context.set(_merged(fields))
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: object) -> None:
    """Add fields for the rest of the current job or request: each runs in its own task, so
    they end with it (and an enclosing `log_context` resets them on exit)."""
    _context.set(_merged(fields))


Job = TypeVar("Job", bound=Callable[..., Coroutine[Any, Any, Any]])


def job_context(**fields: str) -> Callable[[Job], Job]:
    """Run an arq job inside a log context: its arq job id as `job`, and the arguments named
    by `fields` (`@job_context(run="run_id")`) as context fields."""

    def decorate(fn: Job) -> Job:
        signature = inspect.signature(fn)
        unknown = set(fields.values()) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{fn.__name__} has no parameter {', '.join(sorted(unknown))}")

        @functools.wraps(fn)
        async def job(ctx: dict[str, Any], /, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind_partial(ctx, *args, **kwargs).arguments
            values = {name: bound.get(param) for name, param in fields.items()}
            with log_context(job=ctx.get("job_id"), **values):
                return await fn(ctx, *args, **kwargs)

        return cast(Job, job)

    return decorate


# --- redaction ------------------------------------------------------------------------------


class Redactor:
    """Replaces known secret values and credential-shaped strings with `[redacted]`."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        values = sorted({v for v in known if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: object, depth: int = 0) -> object:
        """A JSON-ready copy of `value` with every string redacted; other objects become
        their (redacted) text."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self(value)
        if depth < 4 and isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(v, depth + 1) for v in value]
        if depth < 4 and isinstance(value, Mapping):
            return {self(str(k)): self.scrub(v, depth + 1) for k, v in value.items()}
        return self(str(value))


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold: SecretStr fields (any added later too), model keys,
    and each line of the App's private key (a key may be logged line by line, or cut)."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
        elif isinstance(value, Mapping):
            values += [v.get_secret_value() for v in value.values() if isinstance(v, SecretStr)]
    try:
        pem = settings.private_key_pem()
    except OSError:
        pem = ""
    values += [line.strip() for line in pem.splitlines() if not line.startswith("-----")]
    return values


class RedactingFilter(logging.Filter):
    """Renders the message and redacts it, its extras, exception and stack text in place,
    so whatever formatter runs next only sees redacted text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not take the caller down
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg = self.redactor(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        for key in _extras(record):
            setattr(record, key, self.redactor.scrub(getattr(record, key)))
        return True


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record; an explicit `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_log_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_formatter = logging.Formatter()


def _extras(record: logging.LogRecord) -> list[str]:
    return [k for k in record.__dict__ if k not in _STANDARD_ATTRS and k not in _DROPPED_EXTRAS]


# --- formats --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers (Fly, Loki, Datadog…) index by field."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "process": self.process,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = _extras(record)
        ordered = [k for k in CONTEXT_FIELDS if k in extras]
        ordered += [k for k in extras if k not in CONTEXT_FIELDS]
        for key in ordered:
            value = getattr(record, key)
            if value is not None:
                line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a stray surrogate in a message must not turn into an encoding error.
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for the local demo, context appended in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = [
            f"{k}={getattr(record, k)}"
            for k in CONTEXT_FIELDS
            if getattr(record, k, None) is not None
        ]
        return f"{text} [{' '.join(fields)}]" if fields else text


def build_handler(
    process: str, log_format: str, secrets: Iterable[str], stream: TextIO | None = None
) -> logging.Handler:
    """The one handler every logger writes through: context, then redaction, then format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    handler.setFormatter(JsonFormatter(process) if log_format == "json" else TextFormatter())
    return handler


def configure_logging(settings: Settings, process: str) -> None:
    """Route every logger (ours, uvicorn's, arq's, warnings, uncaught exceptions) through
    one handler on the root logger."""
    handler = build_handler(process, settings.log_format, configured_secrets(settings))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("baro").critical("uncaught exception", exc_info=(kind, value, tb))
