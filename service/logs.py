"""Log set-up for the service commands: plain text, or one JSON object per line (``--log-json``).

A JSON line holds ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``msg``, and, when known,
``worker``, ``study``, ``trial`` and ``ticket``: passed per call (``extra={"trial": 3}``) or
bound for the whole process with :func:`bind` (a worker process binds its id, and its study while
a ticket runs), so that lines from other libraries (Optuna's "Trial 3 finished ...") carry them
too. ``exc`` holds a traceback. A small formatter rather than python-json-logger: a dozen lines,
one dependency fewer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

ID_FIELDS = ("worker", "study", "trial", "ticket")
_bound: dict[str, Any] = {}  # process-wide ids (one worker per process)


def bind(**ids: Any) -> None:
    """Attach ids to every later log record of this process (``None`` removes one). The dict is
    replaced, never changed in place, so a thread that is formatting a record sees one whole set."""
    global _bound
    _bound = {k: v for k, v in {**_bound, **ids}.items() if v is not None}


def json_wanted() -> bool:
    return os.environ.get("RNNTUNE_LOG_JSON", "").strip().lower() in ("1", "true", "yes", "on")


class _BoundIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ID_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def setup(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Configure the root logger on stderr. JSON mode also routes Optuna's own handler and
    Python warnings through it, so that every line of stderr is one JSON object."""
    json_lines = json_wanted() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_BoundIds())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if json_lines:
        logging.captureWarnings(True)
        import optuna

        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
