"""The HTTP client of the client commands: one method per API call, each answer parsed into its
response model (service/api/schemas.py). An answer the command cannot go on from ends it with
the API's reason (:func:`rnntune.service.cli.common.fail`).

Talks to ``RNNTUNE_API_URL`` with ``RNNTUNE_API_TOKEN``; imports neither the app nor torch.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import httpx2

from rnntune.service.api.schemas import (
    BestPublic,
    DatasetList,
    DatasetPublic,
    ModelVersionList,
    StudyList,
    StudyPublic,
    StudySummary,
    TrialPublic,
    TrialsPage,
    ValidationProblem,
    WorkerList,
    WorkerPublic,
)
from rnntune.service.cli.common import fail
from rnntune.service.config import Settings
from rnntune.service.spec import StudySpec


def detail(response: httpx2.Response) -> Any:
    """An error answer's ``detail`` (a JSON problem), else its text."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return response.text
    return response.json().get("detail", response.text)


def answer(response: httpx2.Response) -> Any:
    """A call's JSON answer; an error the caller did not handle ends the command with its detail."""
    if response.status_code >= 400:
        fail(f"{response.status_code}: {detail(response)}")
    return response.json()


def field_errors(response: httpx2.Response) -> str:
    """A 422's field errors, ``field.path: message; ...`` (the ``body`` prefix dropped)."""
    problem = ValidationProblem.model_validate(response.json())
    return "; ".join(f"{'.'.join(map(str, d.loc[1:]))}: {d.msg}" for d in problem.detail)


class Api:
    """The rnntune API at ``api_url`` (default: ``RNNTUNE_API_URL``), as a context manager."""

    def __init__(self, api_url: str | None) -> None:
        token = os.environ.get("RNNTUNE_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx2.Client(base_url=api_url or Settings().api_url, timeout=30.0, headers=headers)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """One call; an unreachable API, a missing token and a refusal (403) end the command."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            fail(f"cannot reach the API at {self.http.base_url} ({exc}); is `rnntune serve` running?")
        if response.status_code == 401:
            fail(f"the API at {self.http.base_url} wants a token: set RNNTUNE_API_TOKEN")
        if response.status_code == 403:  # another owner's study or data set, or a read token
            fail(f"403: {detail(response)}")
        return response

    def _study_call(self, method: str, path: str, name: str, **kwargs: Any) -> httpx2.Response:
        """A call on study ``name``: a 404 ends the command with "no study named"."""
        r = self.request(method, path, **kwargs)
        if r.status_code == 404:
            fail(f"no study named {name!r}")
        return r

    # --- studies ---------------------------------------------------------------------------------

    def submit(self, spec: StudySpec) -> tuple[StudyPublic, bool]:
        """The study ``spec`` made (True) or the same spec's study from before (False)."""
        r = self.request("POST", "/v1/studies", json=spec.model_dump(mode="json"))
        if r.status_code == 422:
            fail(field_errors(r), code=2)
        return StudyPublic.model_validate(answer(r)), r.status_code == 201

    def studies(self) -> list[StudySummary]:
        return StudyList.model_validate(answer(self.request("GET", "/v1/studies"))).items

    def study(self, name: str) -> StudyPublic:
        return StudyPublic.model_validate(answer(self._study_call("GET", f"/v1/studies/{name}", name)))

    def trial(self, name: str, number: int) -> TrialPublic | None:
        """Trial ``number`` of study ``name``; None if it has none by that number."""
        path = f"/v1/studies/{name}/trials"
        page = TrialsPage.model_validate(
            answer(self._study_call("GET", path, name, params={"after": number - 1, "limit": 1}))
        )
        return next((t for t in page.items if t.number == number), None)

    def control(self, action: str, name: str) -> StudyPublic:
        """cancel, pause or resume; a 409 (not in this state) ends the command with its reason."""
        r = self._study_call("POST", f"/v1/studies/{name}/{action}", name)
        if r.status_code == 409:
            fail(detail(r))
        return StudyPublic.model_validate(answer(r))

    def extend(self, name: str, trials: int) -> StudyPublic:
        r = self._study_call("POST", f"/v1/studies/{name}/extend", name, json={"n_trials": trials})
        if r.status_code == 422:
            fail(field_errors(r), code=2)
        return StudyPublic.model_validate(answer(r))

    def delete(self, name: str, force: bool) -> None:
        params = {"force": "true"} if force else None
        r = self._study_call("DELETE", f"/v1/studies/{name}", name, params=params)
        if r.status_code >= 400:
            fail(f"{r.status_code}: {detail(r)}")  # 204: no body to read

    # --- results ---------------------------------------------------------------------------------

    def best(self, name: str) -> BestPublic | None:
        """The study's best result; None while there is none (no completed trial)."""
        r = self.request("GET", f"/v1/studies/{name}/best")
        return BestPublic.model_validate(r.json()) if r.status_code == 200 else None

    def best_model(self, name: str) -> httpx2.Response:
        """The stored best model file's answer (its bytes, and its checksum header)."""
        r = self.request("GET", f"/v1/studies/{name}/best/model")
        if r.status_code == 404:
            fail(r.json().get("detail", f"no study named {name!r}"))
        if r.status_code >= 400:
            fail(f"{r.status_code}: {r.text}")
        return r

    def models(self, name: str) -> ModelVersionList:
        r = self._study_call("GET", f"/v1/studies/{name}/models", name)
        return ModelVersionList.model_validate(answer(r))

    # --- workers and data sets -------------------------------------------------------------------

    def workers(self, include_stopped: bool) -> list[WorkerPublic]:
        r = self.request("GET", "/v1/workers", params={"include_stopped": include_stopped})
        return WorkerList.model_validate(answer(r)).items

    def datasets(self) -> list[DatasetPublic]:
        return DatasetList.model_validate(answer(self.request("GET", "/v1/datasets"))).items

    def upload(self, filename: str, content: bytes, fields: dict[str, str]) -> DatasetPublic:
        """Upload a data file; a refusal ends the command (exit 2 for a file the API rejects)."""
        r = self.request("POST", "/v1/datasets", files={"file": (filename, content)}, data=fields)
        if r.status_code >= 400:
            fail(f"{r.status_code}: {detail(r)}", code=2 if r.status_code == 422 else 1)
        return DatasetPublic.model_validate(r.json())
