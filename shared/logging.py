"""structlog JSON logging with request/task ids bound and personal data masked.

Every service calls `configure_logging` once at start. Context (request_id,
task_id, job_id) is bound with `structlog.contextvars`, so any log line made
while handling a request or job carries it without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import orjson
import structlog

from shared.phone import mask_id_number, mask_number, mask_sensitive_text

# Keys whose values are phone numbers, or ID numbers: masked whole, whatever they contain or however written.
_PHONE_KEYS = {"phone", "to", "from_", "caller", "callee", "to_number", "from_number", "seat_phone"}
_ID_KEYS = {"id_number"}
# Keys the renderer adds or ids we make: never personal, and read on every line (skip the matcher).
_PLAIN_KEYS = {"timestamp", "level", "logger", "service", "request_id"}


def _mask_value(key: str, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and key in _PHONE_KEYS | _ID_KEYS:
        value = str(value)  # a number given as an integer is still a number
    if isinstance(value, str):
        if key in _PHONE_KEYS:
            return mask_number(value)
        if key in _ID_KEYS:
            return mask_id_number(value)
        if key in _PLAIN_KEYS:
            return value
        return mask_sensitive_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_personal_data(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: phone numbers and ID numbers never reach a log sink in clear."""
    return {k: _mask_value(k, v) for k, v in event_dict.items()}


class _CurrentStdout:
    """Writes to whatever sys.stdout is now (cached loggers outlive test captures and redirections)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "INFO", json: bool = True, service: str | None = None) -> None:
    """Route structlog and the standard library's logging through one JSON renderer."""
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared_processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Libraries (uvicorn, sqlalchemy, aiogram) log through the stdlib: render them the same way.
    handler = logging.StreamHandler(_CurrentStdout())  # type: ignore[arg-type]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if service:
        structlog.contextvars.bind_contextvars(service=service)
