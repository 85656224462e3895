"""Forecasts of monthly reuses from their history, by methods simple enough to explain, chosen by a backtest.

History: a table `month, id, reuses` (a month is a number 1, 2, ... or a year-month such as 2025-01). Months
must follow one another. A context's history starts at its first row (a context created later is not a context
with no reuses before); a month missing after that had no reuses.

Methods (each forecast is clipped at 0):
- last_value: the last month's reuses, every month ahead;
- moving_average: the mean of the last 3 months;
- linear_trend: the least-squares line through the whole history, extended;
- seasonal_naive: the same month a year before (with more than 12 months of history).
Backtest: from every month that leaves each method enough history, forecast 1 to `months` months ahead with
the months before it, and compare with what happened. A context too young for the chosen method (a new one)
is forecast by its last value. The error is WAPE, Σ|forecast − actual| / Σ actual:
a MAPE weighted by volume, defined where some months have no reuses. The method with the least error wins,
overall or per context (ties go to the simpler method, in the order above).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .fields import read_text
from .workload import ragged_row_error

SEASON = 12
MOVING_WINDOW = 3
MIN_HISTORY = {"last_value": 1, "moving_average": MOVING_WINDOW, "linear_trend": 3, "seasonal_naive": SEASON}
METHODS = tuple(MIN_HISTORY)
HISTORY_COLUMNS = ("month", "id", "reuses")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")


@dataclass(frozen=True)
class History:
    reuses: np.ndarray       # contexts x months, oldest month first (0 before a context's first month)
    first: np.ndarray        # per context, the index of its first month: its history starts there
    ids: list[str]           # sorted
    months: list[str]        # labels, as written
    source: str              # the file, for messages


@dataclass(frozen=True)
class Forecast:
    reuses: pd.DataFrame      # id, method, reuses_m1 ... reuses_mN
    errors: dict[str, float]  # backtest WAPE of each method the history is long enough for, over all contexts
    chosen_error: float       # backtest WAPE of the chosen method(s)
    min_history: int          # the backtest forecasts from every month with this many months of history before it
    points: int               # (context, month) pairs the backtest compared
    too_short: int            # contexts with too short a history for their chosen method: last_value instead


def read_history(path: Path) -> History:
    """The history table, checked row by row (rows count from 1 after the header)."""
    text = read_text(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""],
                                skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise InputError(str(path), f"empty file (expected a header: {', '.join(HISTORY_COLUMNS)})") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        raise ragged_row_error(path, text) from None
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(str(path), f"missing column {missing[0]!r} (a history has {', '.join(HISTORY_COLUMNS)})")
    if frame.empty:
        raise InputError(str(path), "no rows")

    def where(row: int, column: str) -> str:
        return f"{path}: row {row + 1}, column {column}"

    ids = frame["id"].fillna("").astype(str).str.strip()
    if (ids == "").any():
        raise InputError(where(int(np.argmax((ids == "").to_numpy())), "id"), "empty id")
    index = _month_index(frame["month"].fillna("").astype(str).str.strip(), where)
    reuses = pd.to_numeric(frame["reuses"], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(reuses) | (reuses < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(where(row, "reuses"), f"expected a number >= 0, found {frame['reuses'][row]!r}")
    table = pd.DataFrame({"id": ids, "month": index, "reuses": reuses})
    duplicated = table.duplicated(["id", "month"])
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        raise InputError(where(row, "month"), f"a second row for context {ids[row]!r} in month "
                         f"{frame['month'][row].strip()!r}")
    first, last = int(index.min()), int(index.max())
    gaps = sorted(set(range(first, last + 1)) - set(index.tolist()))
    if gaps:
        raise InputError(str(path), f"no rows for the month after {_label(gaps[0] - 1, frame, index)!r}: "
                         "months must follow one another")
    wide = table.pivot(index="id", columns="month", values="reuses").reindex(columns=range(first, last + 1))
    wide = wide.sort_index()
    return History(reuses=wide.fillna(0.0).to_numpy(float), first=wide.notna().to_numpy().argmax(axis=1),
                   ids=list(wide.index),
                   months=[_label(m, frame, index) for m in range(first, last + 1)], source=str(path))


def _month_index(months: pd.Series, where) -> np.ndarray:
    """Months as consecutive integers: numbers as they are, year-months as year · 12 + month."""
    numbers = pd.to_numeric(months.where(months.str.fullmatch(r"\d+")), errors="coerce")
    parts = months.str.extract(_YEAR_MONTH).astype(float)
    year_months = parts[0] * 12 + parts[1] - 1
    year_months[(parts[1] < 1) | (parts[1] > 12)] = np.nan
    for kind, values in (("numbers", numbers), ("year-months", year_months)):
        if values.notna().all():
            if kind == "numbers" and (values < 1).any():
                row = int(np.argmax((values < 1).to_numpy()))
                raise InputError(where(row, "month"), f"expected a month >= 1, found {months[row]!r}")
            return values.to_numpy(np.int64)
    usable = numbers if numbers.notna().iloc[0] else year_months
    row = int(np.argmax(usable.isna().to_numpy()))
    raise InputError(where(row, "month"), "expected a month number (1, 2, ...) or a year-month (2025-01) like "
                     f"the first row's, found {months[row]!r}")


def _label(month: int, frame: pd.DataFrame, index: np.ndarray) -> str:
    """A month of the history as the table writes it."""
    return str(frame["month"][int(np.argmax(index == month))]).strip()


def predict(method: str, history: np.ndarray, first: np.ndarray, months: int) -> np.ndarray:
    """Forecasts (contexts x months) from a history (contexts x past months; a context's history starts at its
    `first` month) by one method, for contexts whose history is long enough for it."""
    past = history.shape[1]
    ahead = np.arange(1, months + 1)
    if method == "last_value":
        values = np.repeat(history[:, -1:], months, axis=1)
    elif method == "moving_average":
        values = np.repeat(history[:, -MOVING_WINDOW:].mean(axis=1, keepdims=True), months, axis=1)
    elif method == "linear_trend":  # least squares over each context's own months
        x = np.arange(past, dtype=float)
        weight = (x[None, :] >= first[:, None]).astype(float)
        x_mean = (weight * x).sum(axis=1, keepdims=True) / weight.sum(axis=1, keepdims=True)
        y_mean = (weight * history).sum(axis=1, keepdims=True) / weight.sum(axis=1, keepdims=True)
        slope = (weight * (x - x_mean) * (history - y_mean)).sum(axis=1, keepdims=True) \
            / (weight * (x - x_mean) ** 2).sum(axis=1, keepdims=True)
        values = y_mean + slope * (past - 1 + ahead[None, :] - x_mean)
    elif method == "seasonal_naive":
        values = history[:, past - SEASON + (ahead - 1) % SEASON]
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.maximum(values, 0.0)


def _wape(error: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Σ|error| / Σ actual; 0 where both are 0, infinite where only the error is not."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(actual > 0, error / np.where(actual > 0, actual, 1), np.where(error > 0, np.inf, 0.0))


def forecast_reuses(history: History, months: int, per_context: bool = False) -> Forecast:
    """Backtest every method the history is long enough for, choose, and forecast `months` months ahead."""
    contexts, past = history.reuses.shape
    length = past - history.first
    candidates = [m for m in METHODS if MIN_HISTORY[m] < length.max()]
    if not candidates:
        raise InputError(history.source, "every context has one month of history: a backtest needs two")
    min_history = max(MIN_HISTORY[m] for m in candidates)  # the same points judge every method
    error = {m: np.zeros(contexts) for m in candidates}
    actual = np.zeros(contexts)
    points = 0
    for origin in range(min_history, past):
        judged = origin - history.first >= min_history
        truth = history.reuses[judged, origin:origin + months]
        actual[judged] += truth.sum(axis=1)
        points += truth.size
        for method in candidates:
            guess = predict(method, history.reuses[judged, :origin], history.first[judged], truth.shape[1])
            error[method][judged] += np.abs(guess - truth).sum(axis=1)
    errors = {m: float(_wape(error[m].sum(), actual.sum())) for m in candidates}
    if per_context:
        choice = np.argmin(np.column_stack([_wape(error[m], actual) for m in candidates]), axis=1)  # first: simpler
        chosen_error = float(_wape(np.column_stack([error[m] for m in candidates])[np.arange(contexts), choice]
                                   .sum(), actual.sum()))
    else:
        choice = np.full(contexts, min(range(len(candidates)), key=lambda c: errors[candidates[c]]))
        chosen_error = errors[candidates[choice[0]]]
    methods = np.array(candidates)[choice]
    too_short = length < np.array([MIN_HISTORY[m] for m in methods])
    methods[too_short] = "last_value"
    values = np.zeros((contexts, months))
    for method in set(methods):
        rows = methods == method
        values[rows] = predict(method, history.reuses[rows], history.first[rows], months)
    out = pd.DataFrame({"id": history.ids, "method": methods})
    for m in range(months):
        out[f"reuses_m{m + 1}"] = np.round(values[:, m], 3)
    return Forecast(reuses=out, errors=errors, chosen_error=chosen_error, min_history=min_history, points=points,
                    too_short=int(too_short.sum()))
