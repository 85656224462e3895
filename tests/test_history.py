"""Forecasts from reuse history (planner/history.py, `kvplan workload forecast`): the backtest recovers a known
trend and a known season, young contexts, bad input, and the columns `kvplan forecast` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from planner.analyses.forecast import monthly_reuses
from planner.cli import main
from planner.inputs.catalog import load_models
from planner.inputs.history import forecast_reuses, predict, read_history
from planner.inputs.workload import load_workload

TREND = {"rising": (200.0, 25.0), "falling": (900.0, -15.0), "flat": (400.0, 0.0)}  # id: (intercept, slope)


def write_history(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=["month", "id", "reuses"]).to_csv(path, index=False)
    return path


def trend_history(path: Path, months: int = 18, wobble: float = 0.0) -> Path:
    """Reuses on known lines, with an alternating wobble of +-`wobble` of the value."""
    return write_history(path, [(m, i, round((a + b * m) * (1 + wobble * (-1) ** m), 3))
                                for m in range(1, months + 1) for i, (a, b) in TREND.items()])


@pytest.mark.parametrize("per_context", [False, True], ids=["overall", "per-context"])
def test_the_backtest_picks_linear_trend_and_recovers_the_trend(tmp_path, per_context):
    result = forecast_reuses(read_history(trend_history(tmp_path / "h.csv")), 6, per_context=per_context)
    expected = ["linear_trend", "last_value", "linear_trend"] if per_context else ["linear_trend"] * 3
    assert result.reuses["method"].tolist() == expected  # falling, flat (a tie: the simpler method), rising
    assert result.chosen_error == pytest.approx(0, abs=1e-9) and result.errors["last_value"] > 0.01
    for _, row in result.reuses.iterrows():
        a, b = TREND[row["id"]]
        assert [row[f"reuses_m{h}"] for h in range(1, 7)] == pytest.approx([a + b * (18 + h) for h in range(1, 7)])


def test_a_noisy_trend_is_still_found(tmp_path):
    result = forecast_reuses(read_history(trend_history(tmp_path / "h.csv", months=24, wobble=0.03)), 6)
    assert set(result.reuses["method"]) == {"linear_trend"}
    assert 0 < result.chosen_error < min(e for m, e in result.errors.items() if m != "linear_trend")
    rising = result.reuses.set_index("id").loc["rising"]
    slope = np.polyfit(range(1, 7), [rising[f"reuses_m{h}"] for h in range(1, 7)], 1)[0]
    assert slope == pytest.approx(25.0, rel=0.02)


def test_seasonal_naive_wins_on_a_seasonal_history(tmp_path):
    season = {m: 1000 + 300 * np.sin(2 * np.pi * m / 12) for m in range(1, 13)}
    rows = [(f"{y}-{m:02d}", ctx, round(season[m] * k, 3)) for y in (2023, 2024) for m in range(1, 13)
            for ctx, k in (("docs", 1.0), ("faq", 0.2))]
    result = forecast_reuses(read_history(write_history(tmp_path / "h.csv", rows)), 6)
    assert set(result.reuses["method"]) == {"seasonal_naive"} and result.chosen_error == pytest.approx(0, abs=1e-9)
    docs = result.reuses.set_index("id").loc["docs"]
    assert [docs[f"reuses_m{h}"] for h in range(1, 7)] == pytest.approx([round(season[m], 3) for m in range(1, 7)])


def test_seasonal_naive_needs_more_than_a_year(tmp_path):
    result = forecast_reuses(read_history(trend_history(tmp_path / "h.csv", months=12)), 3)
    assert "seasonal_naive" not in result.errors and result.min_history == 3


def test_a_context_starts_at_its_first_month(tmp_path):
    rows = [(m, "old", 100.0 + 10 * m) for m in range(1, 9)] + [(m, "new", 50.0 + 5 * m) for m in range(5, 9)] \
        + [(8, "newest", 70.0)]
    history = read_history(write_history(tmp_path / "h.csv", rows))
    assert history.ids == ["new", "newest", "old"] and history.first.tolist() == [4, 7, 0]
    result = forecast_reuses(history, 2)
    by_id = result.reuses.set_index("id")
    assert by_id.loc["new", "method"] == "linear_trend"  # its own months are a line, the zeros before are not
    assert by_id.loc["new", ["reuses_m1", "reuses_m2"]].tolist() == pytest.approx([95.0, 100.0])
    assert by_id.loc["newest", "method"] == "last_value" and by_id.loc["newest", "reuses_m2"] == 70.0
    assert result.too_short == 1


def test_methods_by_hand():
    history = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]])
    first = np.array([0])
    assert predict("last_value", history, first, 2).tolist() == [[13, 13]]
    assert predict("moving_average", history, first, 2).tolist() == [[12, 12]]
    assert predict("linear_trend", history, first, 2)[0].tolist() == pytest.approx([14, 15])
    assert predict("seasonal_naive", history, first, 2).tolist() == [[2, 3]]
    assert predict("linear_trend", -history, first, 1).tolist() == [[0]]  # never below 0


def test_cli_writes_the_columns_kvplan_forecast_reads(tmp_path):
    history = trend_history(tmp_path / "history.csv")
    (tmp_path / "contexts.csv").write_text("id,tokens,reuses_per_month,prompt_tokens,output_tokens,reuses_m1\n"
                                           "rising,4000,600,100,100,1\nfalling,8000,700,100,100,1\n"
                                           "spare,2000,50,100,100,1\n")
    out = tmp_path / "forecast.csv"
    result = CliRunner().invoke(main, ["workload", "forecast", str(history), "--months", "6", "--contexts",
                                       str(tmp_path / "contexts.csv"), "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "  linear_trend    0.00%" in result.stdout
    assert "chosen overall: linear_trend for 3 contexts (backtest WAPE 0.00%)" in result.stdout
    assert "1 context(s) of the history are not in it" in result.stderr  # flat
    assert "1 context(s) have no history and keep reuses_per_month" in result.stderr  # spare
    (tmp_path / "workload.yaml").write_text("model: Llama-3.1-8B\nslo: {ttft_s: 3}\ncontexts_file: forecast.csv\n")
    workload = load_workload(tmp_path / "workload.yaml", load_models())
    assert workload.contexts["reuses_per_month"].tolist() == [600, 700, 50]  # left as they were
    np.testing.assert_allclose(monthly_reuses(workload, 6), [[200 + 25 * (18 + h) for h in range(1, 7)],
                                                             [900 - 15 * (18 + h) for h in range(1, 7)], [50] * 6])


def test_cli_prints_the_forecast_without_out(tmp_path):
    result = CliRunner().invoke(main, ["workload", "forecast", str(trend_history(tmp_path / "h.csv")), "--months",
                                       "2", "--choose", "per-context"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines() == ["id,method,reuses_m1,reuses_m2", "falling,linear_trend,615.0,600.0",
                                          "flat,last_value,400.0,400.0", "rising,linear_trend,675.0,700.0"]
    assert "chosen per context: last_value for 1 context, linear_trend for 2 contexts" in result.stderr


@pytest.mark.parametrize("text, message", [
    ("month,id,reuses\n1,a,10\n2,a,x\n", "row 2, column reuses: expected a number >= 0, found 'x'"),
    ("month,id,reuses\n1,a,10\n1,a,12\n", "row 2, column month: a second row for context 'a' in month '1'"),
    ("month,id,reuses\n1,a,10\n2,a,12\n4,a,13\n", "no rows for the month after '2': months must follow one another"),
    ("month,id,reuses\n2025-01,a,10\n7,a,12\n", "row 2, column month: expected a month number (1, 2, ...) or a "
     "year-month (2025-01) like the first row's, found '7'"),
    ("month,id,reuses\n1,a,10\n2,a,12,5\n", "row 2: 4 fields, but the header has 3"),
    ("month,id\n1,a\n", "missing column 'reuses' (a history has month, id, reuses)"),
    ("month,id,reuses\n1,a,10\n", "every context has one month of history: a backtest needs two"),
])
def test_bad_history_is_one_line_naming_the_file_and_row(tmp_path, text, message):
    path = tmp_path / "history.csv"
    path.write_text(text)
    result = CliRunner().invoke(main, ["workload", "forecast", str(path), "--months", "3"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {message}\n"
