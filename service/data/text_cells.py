"""A text study's padded token ids, bounded at submit: rows x padded length within
``RNNTUNE_MAX_TEXT_CELLS``.

Every text is padded to the longest kept one, so an uploaded file's rows times the longest
``max_length`` the spec allows (unset: ``RNNTUNE_MAX_TEXT_LENGTH``) is what a worker may have to
hold (8 bytes a cell). The workers' loader checks the exact figure (the longest text it keeps)
for a file the API cannot count, such as one under a data root."""

from __future__ import annotations

from rnntune.service.spec import Limits, StudySpec
from rnntune.service.spec.resources import _window_upper


def padded_cells_error(spec: StudySpec, rows: int, limits: Limits) -> tuple[str, str] | None:
    """(field, reason) when ``rows`` texts padded to the spec's longest kept length are over the
    limit; None when they fit."""
    length = int(_window_upper(spec, limits) or limits.max_text_length)  # text: max_length, else the cap
    cells = rows * length
    if cells <= limits.max_text_cells:
        return None
    field = "search_space.max_length" if "max_length" in spec.search_space else "data.params.max_length"
    return (
        field,
        f"{rows} rows x {length} tokens = {cells} padded token ids, over this server's limit "
        f"RNNTUNE_MAX_TEXT_CELLS={limits.max_text_cells}; set a smaller max_length",
    )
