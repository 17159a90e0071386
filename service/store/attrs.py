"""Every key rnntune stores in Optuna's attribute tables, named once.

Optuna keeps a JSON value per (trial or study, key); these enums are the keys. A member is a
``str`` (``StrEnum``), so it is what Optuna stores and what a lookup in a plain ``user_attrs`` dict
finds: ``trial.user_attrs.get(TrialAttr.BEST_EPOCH)``. The dashboard shows the user attributes as
they are, so their names are part of what a user reads."""

from __future__ import annotations

from enum import StrEnum


class TrialAttr(StrEnum):
    """A trial's user attributes."""

    # written as it trains (service/trials/objective.py)
    EPOCHS = "epochs"  # epochs run
    BEST_EPOCH = "best_epoch"  # the epoch whose weights the trial keeps
    STOPPED = "stopped"  # why training stopped early (patience, a stop request), if it did
    TRAIN_SECONDS = "train_seconds"
    SAMPLES_PER_S = "samples_per_s"
    DEVICE = "device"
    VAL_LOSS = "val_loss"  # the best epoch's validation loss, whatever the metric
    VAL_METRICS = "val_metrics"  # the best epoch's validation metrics, by name
    N_PARAMS = "n_params"
    NAIVE_VAL_LOSS = "naive_val_loss"  # the loss of a model that learned nothing: the bar to beat
    OBJECTIVES = "objectives"  # several objectives: their values, by name
    # how a trial ended, when it did not complete
    FAIL_REASON = "fail_reason"  # a counted failure: its kind ("error", "diverged", "worker lost", ...)
    ERROR = "error"  # the failure's message
    INTERRUPTED = "interrupted"  # stopped (pause, SIGTERM, lost lease, storage): retried, not a failure
    NOT_RUN = "not_run"  # a queued retry the study ended before it ran
    # where its parameters came from
    RETRY_OF = "retry_of"  # the trial number whose parameters it runs again
    INITIAL = "initial"  # True: it ran parameters its ticket carried from the spec (initial_trials, a warm start)
    WARM_START_FROM = "warm_start_from"  # "STUDY#NUMBER": copied from another study


class TrialSystemAttr(StrEnum):
    """A trial's system attributes (not shown by the dashboard)."""

    FIRST_OBJECTIVE_CURVE = "rnntune_first_objective"  # several objectives: {epoch: first objective's value}


class StudyAttr(StrEnum):
    """A study's user attributes (the dashboard shows them)."""

    SPEC = "rnntune_spec"  # the validated spec, as JSON
    SPEC_HASH = "rnntune_spec_hash"  # stored first: what a second creator of the same name compares
    TEST_METRICS = "rnntune_test_metrics"  # the stored model's test metrics
    BEST_MODEL = "rnntune_best_model"  # the stored model: its trial, sha256, size and procedure
    BASELINES = "rnntune_baselines"  # {baseline: its test metrics}
    VERSUS_BASELINE = "rnntune_versus_baseline"  # one line: does the tuned model beat the best baseline on test
    WARNINGS = "rnntune_warnings"


# A FAIL trial with one of these did not fail: it was interrupted (and retried), or it never ran.
NOT_FAILED = (TrialAttr.INTERRUPTED, TrialAttr.NOT_RUN)
