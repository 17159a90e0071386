"""File paths a spec names (``data.path``, embeddings): only under this server's data roots
(``RNNTUNE_DATA_ROOTS``), symlinks followed; text from such a file only with the operator's consent."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnntune.service.spec.study import StudySpec

log = logging.getLogger("rnntune.spec")


def resolve_roots(value: str | Sequence[str | os.PathLike]) -> list[str]:
    """``RNNTUNE_DATA_ROOTS`` (':' or ',' separated) as absolute real paths (symlinks followed
    where they exist: a root may be a mount the workers have and the API has not)."""
    parts = re.split(r"[:,]", value) if isinstance(value, str) else list(value)
    roots = []
    for part in (os.fspath(p).strip() for p in parts):
        if not part:
            continue
        if not os.path.isabs(part):
            raise ValueError(f"data roots must be absolute directories, but got {part!r}")
        roots.append(os.path.realpath(part))
    return roots


def resolve_path(path: Any, roots: Sequence[str]) -> str:
    """The real path (symlinks followed) of a file a spec names, if it lies under a data root."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"must be a file path, but got {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"must be an absolute path, but got {path!r}")
    if not roots:
        raise ValueError(
            "this server allows no file paths (RNNTUNE_DATA_ROOTS is empty): upload the file with POST /v1/datasets"
        )
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise ValueError(f"{path!r} is not under a directory this server allows (RNNTUNE_DATA_ROOTS)")
    return real


def is_path(value: Any) -> bool:
    """An embeddings reference is a path when absolute, else the name or id of an upload."""
    return isinstance(value, str) and os.path.isabs(value)


def named_paths(spec: StudySpec) -> list[tuple[str, Any]]:
    """(field, value) of every file path the spec names."""
    d = spec.data
    if d is None:  # an objective plugin or command: its script is checked by command.spec_errors
        return []
    out = [("data.path", d.path)] if d.path is not None else []
    if d.params.get("path") is not None:
        out.append(("data.params.path", d.params["path"]))
    for key in ("embeddings", "embeddings_vocab"):
        value = d.params.get(key)
        if value is not None and (is_path(value) or not isinstance(value, (str, int))):
            out.append((f"data.params.{key}", value))
    return out


ROOT_TEXT_REASON = (
    "a text study on a server file puts the file's words (its vocabulary) and label names into the "
    "downloadable model file, which this server does not allow (RNNTUNE_ALLOW_ROOT_TEXT is off): upload "
    "the file (POST /v1/datasets) and name it as data.dataset"
)


def root_text_errors(spec: StudySpec, allowed: bool) -> list[tuple[str, str]]:
    """(field, reason) when a text study trains on a path-named (server) file without the
    operator's consent (``RNNTUNE_ALLOW_ROOT_TEXT``): its model file would carry the file's
    vocabulary and label names to whoever downloads it. Uploads are their user's own."""
    d = spec.data
    if allowed or d is None or d.name != "text" or d.dataset is not None:
        return []
    return [(field, ROOT_TEXT_REASON) for field, _ in named_paths(spec) if field in ("data.path", "data.params.path")]


def check_paths(spec: StudySpec, roots: Sequence[str]) -> list[tuple[str, str]]:
    """(field, reason) for each path outside the data roots. Whether the file exists is the
    workers' to say (the API may not see their mounts); they check the roots again first."""
    errors = []
    for field, value in named_paths(spec):
        try:
            resolve_path(value, roots)
        except ValueError as exc:
            errors.append((field, str(exc)))
    return errors
