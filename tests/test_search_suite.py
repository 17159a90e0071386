"""benchmarks/search_suite.py: a tiny version of the evidence suite runs in CI."""

from __future__ import annotations

import importlib.util
import math
import re
import sys

import pytest

from tests.conftest import REPO


def load_suite():
    if "search_suite" not in sys.modules:  # benchmarks/ is scripts, not a package
        spec = importlib.util.spec_from_file_location("search_suite", REPO / "benchmarks" / "search_suite.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["search_suite"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["search_suite"]


def test_tiny_suite_prints_every_strategy_side_by_side(capsys):
    suite = load_suite()
    suite.main(
        [
            "--tasks",
            "sunspots",
            "--seeds",
            "1",
            "--axis-values",
            "2",
            "--epochs",
            "1",
            "--strategies",
            "random,tpe+median,tpe+median@2,tpe+median@2cl,tpe+median/2x2x2",
        ]
    )
    out = capsys.readouterr().out
    summary = out.split("sunspots 8x1 (grid: 8 trials, 8 epochs)")[1].splitlines()
    assert summary[1].split() == [
        "strategy",
        "test",
        "@full",
        "test",
        "@1/3",
        "best",
        "val",
        "gap",
        "gap@mean",
        "to",
        "grid",
        "best",
        "reached",
        "test",
        "<",
        "grid",
        "p",
    ]
    rows = {line.split()[0]: line.split() for line in summary[2:] if line.strip() and not line.startswith("vs ")}
    searched = ["grid", "random", "tpe+median", "tpe+median@2", "tpe+median@2cl", "tpe+median/2x2x2"]
    baselines = ["baseline:persistence", "baseline:seasonal_naive", "baseline:ridge_ar"]
    assert list(rows) == searched + baselines  # the baselines last
    for name, row in rows.items():
        test_full, test_third, best_val, gap, gap_mean = (float(v) for v in row[1:6])
        assert all(math.isfinite(v) and v > 0 for v in (test_full, test_third, best_val)), row
        assert abs(gap) < 10 and abs(gap_mean) < 10, row
        if "/" not in name:  # without re-evaluation the reported val is the winner's one run
            assert gap_mean == gap, row
    assert rows["grid"][6] == "8"  # the grid knows its best after all its epochs
    assert rows["grid"][8] == "-" and all(
        row[8] in ("0/1", "1/1") for name, row in rows.items() if name in searched[1:]
    )
    assert all(rows[name][6:8] == ["-", "-"] for name in baselines), "fitted, not searched: no epochs to reach"
    verdicts = [line for line in summary if line.startswith("vs baselines: ")]
    assert [line.split()[2] for line in verdicts] == searched
    assert all(("beats the best baseline" in line) != ("does NOT beat" in line) for line in verdicts), verdicts
    assert all(row[9] == "1.00" for name, row in rows.items() if name != "grid"), "one seed is no evidence"


def test_a_reevaluated_winners_reported_val_is_its_mean(capsys):
    """gap@mean is the take-home test minus the val the service reports for the winner: with
    re-evaluation, the mean of its runs (its search run and the re-runs), not that one run."""
    suite = load_suite()
    tiny = ["--tasks", "sunspots", "--axis-values", "2", "--epochs", "2", "--seeds", "1"]
    suite.main([*tiny, "--strategies", "random/2x3"])
    lines = [suite.parse_line(line) for line in capsys.readouterr().out.splitlines()]
    (out,) = [parsed[3] for parsed in lines if parsed and parsed[2] == "random/2x3"]
    assert math.isfinite(out["gap_mean"]) and abs(out["gap_mean"]) < 10, out
    assert out["gap_mean"] != out["gap"], "the reported val of a re-evaluated winner is its runs' mean"


def test_lines_from_before_gap_at_mean_read_back():
    suite = load_suite()
    old = "text         0 tpe+median                     59     36    160           25    0.4171   0.4457   0.4473  +0.0287    43s"
    old_sel = old.replace("tpe+median    ", "tpe+median/3x2")
    new = old.replace("+0.0287", "+0.0287  +0.0100")
    assert suite.parse_line(old)[3]["gap_mean"] == 0.0287  # no re-evaluation: the same number
    assert math.isnan(suite.parse_line(old_sel)[3]["gap_mean"])  # re-evaluated: unknown
    assert suite.parse_line(new)[3]["gap_mean"] == 0.0100
    assert suite.parse_line(suite.row_line("text", 0, "tpe+median", suite.parse_line(new)[3])) == suite.parse_line(new)


def test_sign_test_is_the_exact_binomial_tail():
    suite = load_suite()
    assert suite.sign_test(9, 1) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2**10
    assert suite.sign_test(1, 9) == suite.sign_test(9, 1)
    assert suite.sign_test(7, 3) == pytest.approx(2 * (1 + 10 + 45 + 120) / 1024)
    assert suite.sign_test(5, 5) == 1.0 and suite.sign_test(0, 0) == 1.0
    assert suite.sign_test(10, 0) == pytest.approx(2 / 1024)


def test_runs_split_by_seed_summarize_as_one(tmp_path, capsys):
    """--summarize reads runs' per-seed lines back: two seed ranges (and the grid run twice, once
    per range) give the summary of one run over both."""
    suite = load_suite()
    tiny = ["--tasks", "sunspots", "--axis-values", "2", "--epochs", "1", "--strategies", "tpe+median"]
    logs = []
    for first in (0, 1):
        suite.main([*tiny, "--seeds", "1", "--first-seed", str(first)])
        logs.append(tmp_path / f"run{first}.txt")
        logs[-1].write_text(capsys.readouterr().out)
    suite.main([*tiny, "--seeds", "2"])
    together = capsys.readouterr().out
    suite.main(["--summarize", *map(str, logs)])
    summarized = capsys.readouterr().out

    def summary(out):
        return out.split("median over")[1].split()

    assert summary(summarized) == summary(together), summarized  # a run's summary is of its lines as printed
    assert "median over 2 seeds" in summarized
    with pytest.raises(SystemExit):
        suite.main(["--summarize", str(tmp_path / "run0.txt").replace("run0", "none")])


def test_options_are_checked():
    suite = load_suite()
    assert suite.thin([1, 2, 3], 2) == [1, 3] and suite.thin([1, 2, 3], 1) == [2] and suite.thin([1, 2], None) == [1, 2]
    assert suite.per_task("sunspots=4,2") == {"sunspots": 2, "text": 2, "digits": 2, "ragged": 2}
    assert suite.per_task("text=2") == {"text": 2}
    for bad in (
        ["--strategies", "tpe+nope"],
        ["--strategies", "grid+median"],
        ["--strategies", "random@2cl"],
        ["--strategies", "tpe@1"],
        ["--strategies", "grid@2"],
        ["--strategies", "tpe/2"],
        ["--strategies", "tpe/0x2"],
        ["--strategies", "grid/2x2"],
        ["--tasks", "mnist"],
        ["--epochs", "x=1"],
    ):
        with pytest.raises(SystemExit):
            suite.main(bad)


def test_two_workers_in_lockstep_see_each_other_running():
    """@2: both trials of a step are asked before either is told, so the second is sampled with
    the first RUNNING; with the constant liar TPE treats that running point as a bad result."""
    import optuna

    suite = load_suite()
    assert suite.parallel("tpe+median@2cl") == ("tpe+median", 2, True)
    assert suite.parallel("random") == ("random", 1, False)
    study = optuna.create_study()
    seen = []

    def objective(trial):
        seen.append([t.state for t in trial.study.get_trials(deepcopy=False)])
        return trial.suggest_float("x", 0, 1)

    trials = suite._step(study, objective, 2)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert seen[0] == [optuna.trial.TrialState.RUNNING] * 2, "the second was asked before the first ran"
    # From the second step on, each trial has its parameters before the other trains.
    drawn = []

    def objective2(trial):
        drawn.append([dict(t.params) for t in trial.study.get_trials(deepcopy=False)[2:]])
        return trial.suggest_float("x", 0, 1)

    suite._step(study, objective2, 2)
    assert len(drawn[0]) == 2 and all("x" in p for p in drawn[0]), drawn


def counted_suite(monkeypatch):
    """The suite, with the (strategy, seed) of every search it actually runs listed in ``runs``."""
    suite = load_suite()
    runs = []
    real_run = suite.run

    def counted(task_name, strategy, seed, *rest):
        runs.append((strategy, seed))
        return real_run(task_name, strategy, seed, *rest)

    monkeypatch.setattr(suite, "run", counted)
    return suite, runs


def test_results_folder_runs_only_what_it_does_not_hold(tmp_path, capsys, monkeypatch):
    """--results keeps each search's line as it finishes; the same command again, or with one
    more strategy, runs only the searches the folder lacks. Its summary is the one run's."""
    suite, runs = counted_suite(monkeypatch)
    tiny = ["--tasks", "sunspots", "--axis-values", "2", "--epochs", "1", "--seeds", "2", "--results", str(tmp_path)]
    suite.main([*tiny, "--strategies", "tpe+median"])
    first = capsys.readouterr().out
    assert sorted(runs) == [("grid", 0), ("grid", 1), ("tpe+median", 0), ("tpe+median", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sunspots-8x1-seed-0.txt", "sunspots-8x1-seed-1.txt"]
    assert suite.scales((tmp_path / "sunspots-8x1-seed-0.txt").read_text().splitlines()[0])["sunspots"][:2] == (8, 1)

    runs.clear()
    suite.main([*tiny, "--strategies", "tpe+median,random"])
    second = capsys.readouterr().out
    assert sorted(runs) == [("random", 0), ("random", 1)], "the grid and tpe+median were held"
    assert "4 of 6 searches held" in second

    def lines(out, strategy):
        return [line for line in out.splitlines() if suite.parse_line(line) and line.split()[2] == strategy]

    assert lines(second, "tpe+median") == lines(first, "tpe+median")
    assert lines(second, "grid") == lines(first, "grid")

    runs.clear()
    suite.main([*tiny, "--strategies", "tpe+median,random"])
    assert runs == [], "everything held: nothing to run"
    assert capsys.readouterr().out.split("median over")[1] == second.split("median over")[1]
    suite.main(["--summarize", str(tmp_path)])
    assert capsys.readouterr().out.split("median over")[1] == second.split("median over")[1]
    suite.main(["--summarize", str(tmp_path), "--markdown"])  # the README's tables
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[0]][:3] == ["strategy", "test @ 8 epochs", "test @ 3"]
    plain = {line.split()[0]: line.split() for line in second.split("median over")[1].splitlines()[4:] if line}
    for row in table[2:]:
        name, test, *_, below, p = (c.strip() for c in row)
        assert abs(float(test) - float(plain[name][1])) <= 6e-4 and [below, p] == plain[name][8:10], (row, plain[name])
    names = [row[0].strip() for row in table[2:]]
    assert names[:3] == ["grid", "tpe+median", "random"] and all(n.startswith("baseline:") for n in names[3:])


def test_each_scale_keeps_its_own_results_files(tmp_path, capsys, monkeypatch):
    """Lines measured at another scale go to files of their own, under a header that describes
    them: rerunning either scale's command runs nothing, and the summary has a table per scale.
    (They used to be appended under the first scale's header: the second scale was rerun every
    time and summarized as the first.) A file of this scale from other versions is refused."""
    suite, runs = counted_suite(monkeypatch)
    tiny = ["--tasks", "sunspots", "--axis-values", "2", "--seeds", "1", "--results", str(tmp_path)]
    tiny += ["--strategies", "random"]
    for epochs in ("1", "2", "1", "2"):
        suite.main([*tiny, "--epochs", epochs])
    assert runs == [("grid", 0), ("random", 0)] * 2, "each scale ran once"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sunspots-8x1-seed-0.txt", "sunspots-8x2-seed-0.txt"]
    for epochs in (1, 2):
        lines = (tmp_path / f"sunspots-8x{epochs}-seed-0.txt").read_text().splitlines()
        assert suite.scales(lines[0])["sunspots"][:2] == (8, epochs) and len(lines) == 3 + 3  # + 3 baselines
    capsys.readouterr()
    suite.main(["--summarize", str(tmp_path)])
    out = capsys.readouterr().out
    assert "sunspots 8x1 (grid: 8 trials, 8 epochs)" in out and "sunspots 8x2 (grid: 8 trials, 16 epochs)" in out

    path = tmp_path / "sunspots-8x1-seed-0.txt"
    text = path.read_text()
    path.write_text(re.sub(r"Optuna \S+;", "Optuna 0.1;", text, count=1))
    with pytest.raises(SystemExit, match="sunspots-8x1-seed-0.txt was measured with other versions"):
        suite.main([*tiny, "--epochs", "1", "--strategies", "tpe+median"])
    assert path.read_text().count("\n") == text.count("\n"), "nothing appended under the other versions' header"


def test_a_seed_repeats_to_the_last_digit(capsys):
    """The same seed gives the same lines, Hyperband included (it picks a trial's bracket by a hash
    of the study's name: an unnamed study's is random)."""
    suite = load_suite()
    tiny = ["--tasks", "sunspots", "--seeds", "1", "--axis-values", "2", "--epochs", "3"]
    lines = []
    for _ in range(2):
        suite.main([*tiny, "--strategies", "tpe+hyperband,random+successive_halving"])
        lines.append(
            [line.rsplit(None, 1)[0] for line in capsys.readouterr().out.splitlines() if suite.parse_line(line)]
        )
    assert len(lines[0]) == 3 + 3 and lines[0] == lines[1]  # grid, two strategies, three baselines


def test_baseline_rows_are_the_results_baselines_on_the_trials_split(capsys):
    """A task's baseline:NAME rows are ``fit_baselines`` on the very data the trials train on."""
    from rnntune.models.baselines import fit_baselines
    from rnntune.models.data import load_dataset

    suite = load_suite()
    suite.main(["--tasks", "sunspots", "--seeds", "1", "--axis-values", "1", "--epochs", "1", "--strategies", "random"])
    rows = {p[2]: p[3] for p in map(suite.parse_line, capsys.readouterr().out.splitlines()) if p}
    data = load_dataset("sunspots", window=24)
    by_hand = fit_baselines(data, period=data.meta["period"])
    for name in ("persistence", "seasonal_naive", "ridge_ar"):
        assert rows[f"baseline:{name}"]["test"] == pytest.approx(by_hand[name]["test"]["loss"], abs=5e-5)
        assert rows[f"baseline:{name}"]["best_val"] == pytest.approx(by_hand[name]["val"]["loss"], abs=5e-5)


def test_the_ragged_task_is_scikit_learns_digits_by_columns_with_lengths(tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits

    suite = load_suite()
    with np.load(suite.ragged_digits(tmp_path / "digits.npz"), allow_pickle=False) as f:
        x, y, lengths = f["X"], f["y"], f["lengths"]
    images = load_digits().images
    assert x.shape == (1797, 8, 8) and lengths.min() >= 2 and lengths.max() == 8 and len(set(lengths)) > 3
    assert np.all(x[np.arange(8)[None, :] >= lengths[:, None]] == 0)
    assert np.array_equal(x.sum(axis=(1, 2)), images.sum(axis=(1, 2))) and np.array_equal(y, load_digits().target)
