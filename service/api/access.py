"""Owners and roles: who may change a study or a data set (docs/security.md, "Owners and roles").

A token (``RNNTUNE_API_TOKENS``) carries a name and a role: ``admin`` may do anything, ``user``
may change only what its name created, ``read`` may only read (``TokenAuth`` refuses its writes
before any route runs). A study's or data set's ``owner`` is the name of the token that created
it; null when it was created by a token without a name, or before owners existed: then only an
admin changes it. With owners not enforced (``RNNTUNE_ACCESS=shared``, or ``auto`` without named
tokens) every token may do anything, as before, and owners are still recorded.

Every route that changes a study or a data set calls :func:`require_owner` (or takes
:data:`OwnedStudy` / :data:`OwnedDataset`, which look the row up and call it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from rnntune.service.api.deps import SessionDep, study_or_404
from rnntune.service.api.security import PRINCIPAL_KEY


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the token's name (None: a token without one, or an open API) and
    role, and whether owners are enforced on this server."""

    name: str | None
    role: str
    enforced: bool

    @property
    def is_admin(self) -> bool:
        return not self.enforced or self.role == "admin"


def get_caller(request: Request) -> Caller:
    token = getattr(request.state, PRINCIPAL_KEY, None)
    enforced = request.app.state.settings.owners_enforced
    if token is None:  # no tokens configured: the open API of a single-user install
        return Caller(name=None, role="admin", enforced=enforced)
    return Caller(name=token.name, role=token.role, enforced=enforced)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_owner(caller: Caller, row: Any, what: str = "study") -> None:
    """403 unless ``caller`` may change ``row`` (a StudyRow or DatasetRow): an admin, or the
    ``user`` whose token name created it."""
    if caller.is_admin:
        return
    if caller.role == "user" and caller.name is not None and row.owner == caller.name:
        return
    who = f"token {caller.name!r}" if caller.name else "this token"
    owner = f"belongs to {row.owner!r}" if row.owner else "has no owner"
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail=f"{what} {row.name!r} {owner}: {who} (role {caller.role!r}) may change only its own",
    )


def owned_study(name: str, session: SessionDep, caller: CallerDep):
    """The study ``name`` (404 if none), after :func:`require_owner` let the caller change it."""
    row = study_or_404(session, name)
    require_owner(caller, row, "study")
    return row


def owned_dataset(ref: str, session: SessionDep, caller: CallerDep):
    """The data set ``ref`` (name or id; 404 if none), after :func:`require_owner`."""
    from rnntune.service.data import datasets

    row = datasets.find(session, ref)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dataset named {ref!r}")
    require_owner(caller, row, "dataset")
    return row


OwnedStudy = Annotated[Any, Depends(owned_study)]
OwnedDataset = Annotated[Any, Depends(owned_dataset)]
