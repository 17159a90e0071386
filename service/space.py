"""A spec's search space: the parameter kinds (float, int, categorical, with ``when``) and grids.

Imported by :mod:`rnntune.service.spec` (the schema) and :mod:`rnntune.service.search` (Optuna),
so that neither needs the other at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = bool | int | float | str


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None, description="suggest only when another parameter has one of these values"
    )

    def when_values(self) -> dict[str, list]:
        return {k: v if isinstance(v, list) else [v] for k, v in (self.when or {}).items()}


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def grid_len(self) -> int:
        if self.step is None:
            raise ValueError("grid search needs discrete values: give this float a step, or make it categorical")
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def grid(self) -> list:
        n, step = self.grid_len(), self.step  # grid_len raises without a step
        assert step is not None
        return [round(self.low + i * step, 12) for i in range(n)]


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    def grid_len(self) -> int:
        return len(range(self.low, self.high + 1, self.step))

    def grid(self) -> list:
        return list(range(self.low, self.high + 1, self.step))


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, choices: list) -> list:
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ValueError(f"choices must be distinct, but got {choices}")
        return choices

    def grid_len(self) -> int:
        return len(self.choices)

    def grid(self) -> list:
        return list(self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, but got low={low!r} > high={high!r}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, but got low={low!r}")
    if log and step is not None:
        raise ValueError("step and log cannot be used together")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


MAX_GRID_POINTS = 1_000_000  # beyond this a grid is a mistake, whatever the server's limit


def _grid_params(search_space: Mapping[str, Param]):
    for name, param in search_space.items():
        if param.when:
            raise ValueError(f"search_space.{name}: grid search cannot use conditional parameters (when)")
        yield name, param
    if not search_space:
        raise ValueError("search_space: grid search needs at least one parameter")


def grid_size(search_space: Mapping[str, Param]) -> int:
    """Points of a grid search, counted without building the grid (raises ValueError naming a
    parameter that has no grid)."""
    size = 1
    for name, param in _grid_params(search_space):
        try:
            size *= param.grid_len()
        except ValueError as exc:
            raise ValueError(f"search_space.{name}: {exc}") from None
    return size


def grid_axes(search_space: Mapping[str, Param]) -> dict[str, list]:
    """Each searched parameter's grid values."""
    size = grid_size(search_space)
    if size > MAX_GRID_POINTS:
        raise ValueError(f"search_space: the grid has {size} points, more than {MAX_GRID_POINTS}")
    return {name: param.grid() for name, param in _grid_params(search_space)}
