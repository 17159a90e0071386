"""The client commands' text: one function per thing shown, from the API's response models
(service/api/schemas.py) to lines. Nothing here prints or talks HTTP."""

from __future__ import annotations

from typing import Any

from rnntune.service.api.schemas import (
    DatasetPublic,
    ModelVersion,
    SelectionPublic,
    StudyPublic,
    StudySummary,
    WorkerPublic,
)
from rnntune.service.store.attrs import TrialAttr


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def progress_line(s: StudySummary) -> str:
    """A study on one line: state, finished trials of the budget, trial counts, best value."""
    c = s.counts
    return (
        f"{s.name}: {s.state:<9} {s.finished}/{s.n_trials} finished "
        f"(complete {c.complete}, pruned {c.pruned}, failed {c.failed}, interrupted {c.interrupted}, "
        f"running {c.running})  "
        f"best {s.metric} {num(s.best_value)}" + (f"  ({s.reason})" if (s.reason or "").startswith("waiting") else "")
    )


def best_lines(s: StudyPublic) -> list[str]:
    """Why the study ended (if it says), and its best trial's value and parameters."""
    lines = [f"reason: {s.reason}"] if s.reason else []
    best = s.best_trial
    if not best:
        return [*lines, "no completed trial"]
    naive = best.user_attrs.get(TrialAttr.NAIVE_VAL_LOSS)
    baseline = f" (naive baseline {naive:.6g})" if naive is not None else ""
    lines.append(f"best trial #{best.number}: {s.metric} = {best.value:.6g} after {best.epochs} epochs{baseline}")
    return lines + [f"  {k}: {v}" for k, v in best.params.items()]


def baseline_lines(
    baselines: dict[str, Any] | None,
    versus: dict[str, Any] | None,
    test_metrics: dict[str, Any] | None,
    warnings: list[str],
) -> list[str]:
    """The stored model's test score beside the simple models' on the same split, the verdict
    line, and the result's warnings."""
    lines = []
    if baselines:
        key = (versus or {}).get("metric", "test loss").removeprefix("test ")
        model = (test_metrics or {}).get(key)
        lines.append(f"test {key}: tuned model {num(model)}; baselines on the same split:")
        for name, b in baselines.items():
            if b.get("skipped"):
                lines.append(f"  {name:<15} skipped: {b['skipped']}")
                continue
            test = b.get("test") or {}
            lines.append(f"  {name:<15} {num(test.get(key)):>10}  (val {num((b.get('val') or {}).get(key))})")
    if versus:
        lines.append(versus["line"])
    return lines + [f"warning: {warning}" for warning in warnings]


def selection_lines(sel: SelectionPublic, metric: str) -> list[str]:
    """The re-evaluated candidates: mean ± sd over n runs each, the winner marked."""
    lines = [
        f"re-evaluation: top {sel.top_k} x {sel.seeds} seeds x {sel.folds} folds, "
        f"{sel.done}/{sel.total} runs done; winner: best mean {metric}"
    ]
    if not sel.candidates:
        return [*lines, "  (candidates are chosen when the search ends)"]
    lines.append(f"  {'trial':>6}  {'search':>10}  {'mean':>10}  {'sd':>10}  {'n':>3}  {'failed':>6}")
    for c in sel.candidates:
        search = next((r.value for r in c.runs if r.seed_index == 0 and r.fold == sel.folds - 1), None)
        cells = [num(search), num(c.mean), "±" + num(c.sd).strip() if c.sd is not None else "-"]
        mark = "  <- winner" if c.trial == sel.winner else ""
        mark += "  (search best)" if c.trial == sel.search_best else ""
        lines.append(
            f"  {'#' + str(c.trial):>6}  {cells[0]:>10}  {cells[1]:>10}  {cells[2]:>10}  {c.n:>3}  {c.failed:>6}{mark}"
        )
    return lines


def worker_line(w: WorkerPublic) -> str:
    """A worker: its state, what it runs, its device, labels and plugins, its last heartbeat."""
    doing = ""
    if w.study is not None:
        trial = f", trial {w.trial_number}" if w.trial_number is not None else ""
        doing = f" on {w.study} (ticket {w.ticket_id}{trial})"
    labels = f" labels {','.join(w.labels)}" if w.labels else ""
    labels += "".join(f"; plugin {p.name} ({p.group}, {p.distribution} {p.version})" for p in w.plugins)
    labels += "; runs commands" if w.commands else ""
    return f"{w.id}: {w.state}{doing}; {w.device}{labels}; last heartbeat {w.heartbeat_age_s:.0f} s ago"


def dataset_line(d: DatasetPublic) -> str:
    """An uploaded data set: its name, id, format, size, checksum and what it holds."""
    info = d.info
    what = (
        f"{info.get('rows')} rows, numeric columns {info.get('numeric_columns')}"
        if d.format == "csv"
        else f"X {info.get('X')}, y {info.get('y')}, {info.get('task')}"
    )
    owner = f"; owner {d.owner}" if d.owner else ""
    return f"{d.name} (id {d.id}): {d.format}, {d.size:,} bytes, sha256 {d.sha256[:12]}; {what}{owner}"


def model_version_line(m: ModelVersion, metric_name: str) -> str:
    """A stored model version; ``*`` marks the current one. Its time as the API wrote it."""
    metric = "-" if m.metric is None else f"{m.metric:.6g}"
    mark = "*" if m.current else " "
    created = m.model_dump(mode="json")["created_at"]
    return f"{mark} v{m.version}  trial {m.trial_number}  {metric_name} {metric}  {created}"


def metrics_shown(metrics: dict[str, Any] | None) -> str:
    """The numeric entries of a metrics dict, ``name value, ...``; ``-`` when there are none."""
    shown = ", ".join(f"{k} {v:.6g}" for k, v in (metrics or {}).items() if isinstance(v, (int, float)))
    return shown or "-"
