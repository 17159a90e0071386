"""How many samples a study's val split will hold, as far as the spec (and an upload's stored
info) tells at submit, and the warning a small one earns (``RNNTUNE_SMALL_VAL_SPLIT``).

Torch-free: the API calls it. The counts mirror ``rnntune.models.data``'s splits (val_fraction
0.15): a forecasting val segment of n steps gives n - horizon + 1 windows, sine gives its val
series' windows, the others round(N x 0.15) samples. None where the spec does not tell (a
server path, a plugin's data)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rnntune.service.data import datasets
from rnntune.service.space import CategoricalParam
from rnntune.service.spec import DataSpec, StudySpec
from rnntune.service.trials.finalize import small_val_warning

VAL_FRACTION = 0.15  # load_dataset's default, which the workers use
BUILTIN_LENGTHS = {"sunspots": 309, "digits": 1797}
CO2_LENGTHS = {"monthly": 526, "weekly": 2284}


def _window(spec: StudySpec, data: DataSpec, default: int) -> int:
    """The longest window the study may train with (the fewest windows), else ``data.window``."""
    space = spec.search_space.get("window")
    if isinstance(space, CategoricalParam):
        return int(max(space.choices))
    if space is not None:
        return int(space.high)
    return data.window or default


def val_samples(session: Session, spec: StudySpec) -> int | None:
    d = spec.data
    if d is None or spec.objective is not None:
        return None
    n_val = lambda n: int(round(n * VAL_FRACTION))  # noqa: E731
    if d.name == "sine":
        length = d.params.get("length", 60)
        window = _window(spec, d, min(48, length - d.horizon))
        return n_val(d.params.get("n_series", 500)) * max(0, length - window - d.horizon + 1)
    if d.name == "adding":
        return n_val(d.params.get("n_samples", 3000))
    if d.name == "digits":
        return n_val(BUILTIN_LENGTHS["digits"])
    steps = None
    if d.name == "sunspots":
        steps = BUILTIN_LENGTHS["sunspots"]
    elif d.name == "co2":
        steps = CO2_LENGTHS.get(d.params.get("frequency", "monthly"))
    elif d.dataset is not None:
        row = datasets.find(session, d.dataset)
        if row is None:
            return None
        if row.format == "csv":
            steps = row.info.get("rows")
        elif row.format == "npz":
            return n_val(row.info["X"][0])
        elif row.format == "text":
            return n_val(row.info.get("rows", 0))
    if steps is None:
        return None
    return max(0, n_val(steps) - d.horizon + 1)


def submit_warnings(session: Session, spec: StudySpec, threshold: int) -> list[str]:
    """The warnings a submission's response carries (the same text the result repeats)."""
    n = val_samples(session, spec)
    if n is None or n >= threshold or spec.selection.folds > 1:
        return []
    return [small_val_warning(n, threshold)]
