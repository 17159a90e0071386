"""Every number in a spec is one a worker, Optuna and the database can hold.

A decoded spec is walked once, whatever its shape (free-form dicts such as ``data.params``,
``model``, sampler and pruner options and ``initial_trials`` included), before any field is
validated: JSON's ``NaN`` / ``Infinity`` (and ``1e400``, which decodes to infinity), YAML's
``.nan`` / ``.inf`` and integers beyond 64 bits are refused, naming where they are. NaN passes
every ``<`` / ``>`` bound check and is stored as JSON ``null``, so one that got through would
make the stored spec unreadable; checking here, rather than field by field, covers every number
the spec holds now and any field added later.
"""

from __future__ import annotations

import math
from typing import Any

INT_BOUND = 2**63  # integers a spec may hold: |n| < 2**63 (int64, what numpy / torch / SQL take)
MAX_REPORTED = 20  # errors listed at most; the walk stops there


def _child(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def bad_numbers(data: Any, where: str = "") -> list[tuple[str, str]]:
    """(field, reason) for each number in ``data`` that is not finite or does not fit int64.

    Iterative (a deeply nested body cannot exhaust the stack) and in document order."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(where, data)]
    while stack and len(out) < MAX_REPORTED:
        path, value = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
                out.append((path, f"every number in a spec must be finite, but got {shown}"))
        elif isinstance(value, int):
            if not -INT_BOUND < value < INT_BOUND:
                out.append((path, f"integers must lie within +-2**63, but got one of {len(str(abs(value)))} digits"))
        elif isinstance(value, dict):
            stack.extend((_child(path, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return out


def check_numbers(data: Any) -> None:
    """Raise ValueError("field: reason") for the first bad number (a model validator's check)."""
    errors = bad_numbers(data)
    if errors:
        field, reason = errors[0]
        raise ValueError(f"{field}: {reason}" if field else reason)
