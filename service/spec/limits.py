"""What this server lets a spec ask of a worker (``RNNTUNE_MAX_*``): the values."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("rnntune.spec")


@dataclass(frozen=True)
class Limits:
    """Per-spec limits; ``Settings.limits`` fills them from ``RNNTUNE_MAX_*``. The defaults are
    the settings' defaults, sized so that one worker on a 24 GiB machine survives any spec."""

    max_trials_per_study: int = 10_000
    max_epochs_per_trial: int = 1_000
    max_grid_size: int = 100_000
    max_spec_kb: int = 64
    max_model_params: int = 50_000_000
    max_batch_elements: int = 2**26
    max_data_elements: int = 2**28
    max_search_option: int = 10_000
    max_selection_runs: int = 50
    max_classes: int = 1000
    max_vocab: int = 100_000
    max_text_length: int = 512
    max_text_cells: int = 2**27
    max_initial_trials: int = 1000
    max_warm_start_studies: int = 10
    max_warm_start_trials: int = 100
