"""Reading a spec: YAML / JSON without anchors, validation with every bad field named
(:class:`SpecError`), and stored specs parsed once per process."""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from rnntune.service.finite import bad_numbers
from rnntune.service.spec.limits import Limits
from rnntune.service.spec.resources import check_limits
from rnntune.service.spec.sections import DataSpec
from rnntune.service.spec.study import StudySpec

log = logging.getLogger("rnntune.spec")


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` lists (field, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in errors))


def format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # whole-spec checks say where in their message: "budget.n_trials: ..."
            head, sep, rest = msg.partition(": ")
            if sep and _LOC_RE.match(head) and head.split(".")[0].split("[")[0] in StudySpec.model_fields:
                loc, msg = head, rest
        elif loc == "data":  # so do the data section's: "dataset: ..." -> data.dataset
            head, sep, rest = msg.partition(": ")
            if sep and head.split(".")[0] in DataSpec.model_fields:
                loc, msg = f"data.{head}", rest
        out.append((loc, msg))
    return out


_LOC_RE = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_0-9]+(\[\d+\])?)*$")


_STORED: dict[str, StudySpec] = {}
_BROKEN: dict[str, str] = {}  # spec_hash -> why that stored spec does not parse
_STORED_MAX = 4096


class BrokenSpec(ValueError):
    """A study's stored spec no longer parses (an older version let a bad value through, or a
    row was edited): the study is shown with this reason, and workers fail it rather than run it."""


def stored_spec(row: Any) -> StudySpec:
    """A study row's spec, parsed once per process: the stored JSON was validated at submit, and a
    study's spec never changes (``row.spec_hash`` is its digest), so GETs and the queue read typed
    fields instead of dicts and never re-validate (which builds a sampler). Raises
    :class:`BrokenSpec` (also remembered per digest) when it no longer parses."""
    spec = _STORED.get(row.spec_hash)
    if spec is not None:
        return spec
    reason = _BROKEN.get(row.spec_hash)
    if reason is None:
        try:
            spec = load_stored(row.spec)
        except (ValueError, TypeError, AttributeError) as exc:  # ValidationError is a ValueError
            reason = _problem(exc)
        else:
            if len(_STORED) >= _STORED_MAX:
                _STORED.clear()
            _STORED[row.spec_hash] = spec
            return spec
        if len(_BROKEN) >= _STORED_MAX:
            _BROKEN.clear()
        _BROKEN[row.spec_hash] = reason
    raise BrokenSpec(reason)


def try_stored_spec(row: Any) -> StudySpec | None:
    """:func:`stored_spec`, or None when the stored spec no longer parses (readers that must
    never fail: lists, metrics, cancel, the data-set guard)."""
    try:
        return stored_spec(row)
    except BrokenSpec:
        return None


def broken_reason(row: Any) -> str | None:
    """Why a study's stored spec does not parse (None: it does)."""
    try:
        stored_spec(row)
    except BrokenSpec as exc:
        return str(exc)
    return None


def stored_spec_problem(data: Any) -> str | None:
    """Why ``data`` (a stored spec) cannot be read back as a StudySpec, or None."""
    try:
        load_stored(data)
    except (ValueError, TypeError, AttributeError) as exc:
        return _problem(exc)
    return None


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in format_errors(exc))
        return f"the stored spec no longer parses: {errors}"
    return f"the stored spec no longer parses ({type(exc).__name__})"  # not a mapping at all, say


def load_stored(data: dict[str, Any]) -> StudySpec:
    """A spec this service stored (validated when it was submitted), read back as a StudySpec.

    A spec stored by an older version lacks the fields added since: they take their defaults. Keys
    this version does not know (a newer version's, met during a rolling upgrade) are left out with
    a warning rather than refused, so the study can still be read, listed and run; a new spec
    (``parse_spec``) is still refused for them."""
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not unknown or len(unknown) < exc.error_count():
            raise
    known = copy.deepcopy(data)
    for loc in unknown:
        _drop(known, loc)
    log.warning(
        "the stored spec of %r has keys this version does not know, left out: %s",
        data.get("name"),
        ", ".join(".".join(str(p) for p in loc) for loc in unknown),
    )
    return StudySpec.model_validate(known)


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    """Delete the key at ``loc`` (a pydantic error location; a union's tag such as ``float`` in
    ``search_space.lr.float.step`` is not a key of the data and is skipped)."""
    *path, key = loc
    for part in path:
        if isinstance(data, dict) and part in data:  # noqa: SIM114 (two branches: mypy narrows part to an int in the second)
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int):
            data = data[part]
    if isinstance(data, dict):
        data.pop(key, None)


def parse_spec(data: Any, limits: Limits | None = None) -> StudySpec:
    """Validate a decoded spec (a dict); raise :class:`SpecError` naming each bad field.

    ``limits``: this server's (``Settings.limits``), checked by the API before anything is built
    from the spec; None (a client checking a file, a worker re-reading a stored spec) skips them."""
    if not isinstance(data, dict):
        raise SpecError([("", f"a spec must be a mapping, but got {type(data).__name__}")])
    if limits is not None:
        size = len(json.dumps(data, default=str, separators=(",", ":")))
        if size > limits.max_spec_kb * 1024:
            raise SpecError(
                [
                    (
                        "",
                        f"the spec is {size} bytes once parsed, over this server's limit RNNTUNE_MAX_SPEC_KB={limits.max_spec_kb}",
                    )
                ]
            )
    numbers = bad_numbers(data)  # every one named, before any field is read
    if numbers:
        raise SpecError(numbers)
    try:
        checks = () if limits is None else (functools.partial(check_limits, limits=limits),)
        return StudySpec.model_validate(data, context={"limits": limits, "checks": checks})
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a spec never needs them, and an alias bomb (a few
    hundred bytes that expand to megabytes) needs nothing else."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors (&name) and aliases (*name) are not allowed in a spec", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` minus anchors and aliases (raises yaml.YAMLError on either)."""
    return yaml.load(text, Loader=_PlainLoader)


def load_spec(path: str | Path) -> StudySpec:
    """Read a YAML or JSON spec file (JSON is YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror or exc}")]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([("", f"{path} is not valid YAML/JSON: {exc}")]) from None
    return parse_spec(data)
