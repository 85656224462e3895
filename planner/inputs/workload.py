"""Workloads (MODEL.md §3.3): the model served, the SLOs, background traffic and the reusable contexts.

Contexts come inline (`contexts:`) or from a CSV/Parquet file (`contexts_file:`, relative to the workload
file). Every value is checked; an error names the file and key (inline) or the row and column (file; rows
count data rows from 1, after the header).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import PRICINGS, ModelCard, file_sha256, load_models, parse_model
from .errors import InputError, warn
from .fields import Section, load_yaml, read_text

MODES = ("provisioned", "per_use")
SLO_POLICIES = ("strict", "best_effort")  # MODEL.md §5: refuse the plan, or let contexts that can meet no SLO miss
MONTHLY = re.compile(r"^reuses_m([1-9]\d*)$")  # forecast columns: reuses in month 1, 2, ... of a horizon
REQUIRED_COLUMNS = ("id", "tokens", "reuses_per_month", "prompt_tokens", "output_tokens")
OPTIONAL_COLUMNS = {"ttft_slo_s": np.nan, "tpot_slo_s": np.nan, "writes_per_month": 1.0}
INTEGER_COLUMNS = ("tokens", "prompt_tokens", "output_tokens")
MAX_PLAUSIBLE_TTFT_S = 300.0  # an SLO above this was probably meant in milliseconds
MAX_PLAUSIBLE_TPOT_S = 2.0
MAX_TOKENS = 1e9  # far beyond any context window; keeps token counts exact in int64 and float arithmetic
_WORKLOAD_KEYS = ("name", "description", "model", "mode", "hours_per_month", "peak_to_mean", "pricing", "slo",
                  "slo_policy", "traffic", "contexts", "contexts_file")


@dataclass(frozen=True)
class Traffic:
    """Background requests that reuse no stored context."""
    requests_per_month: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    model: ModelCard
    mode: str
    hours_per_month: float
    peak_to_mean: float
    pricing: str
    ttft_slo_s: float
    tpot_slo_s: float | None
    traffic: Traffic | None
    contexts: pd.DataFrame = field(repr=False)  # one row per context; columns REQUIRED + OPTIONAL
    name: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # file path -> sha256
    slo_policy: str = "strict"

    def settings(self) -> dict[str, Any]:
        """The workload without its contexts, as plain data (stored in a plan so it can be re-priced)."""
        traffic = None if self.traffic is None else dict(self.traffic.__dict__)
        return {"name": self.name, "model": self.model.name, "mode": self.mode,
                "hours_per_month": self.hours_per_month, "peak_to_mean": self.peak_to_mean,
                "pricing": self.pricing, "slo": {"ttft_s": self.ttft_slo_s, "tpot_s": self.tpot_slo_s},
                "slo_policy": self.slo_policy, "traffic": traffic}


def plain_value(value: Any) -> Any:
    """A cell as the user wrote it (numpy scalars shown as plain numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def _row_locator(file: str, inline: bool) -> Callable[[int, str], str]:
    if inline:
        return lambda row, column: f"{file}: contexts[{row}].{column}"
    return lambda row, column: f"{file}: row {row + 1}, column {column}"


def check_contexts(frame: pd.DataFrame, where: Callable[[int, str], str], file: str,
                   model: ModelCard) -> pd.DataFrame:
    """Validate and normalise a contexts table; the first bad cell is reported."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(file, f"missing column {missing[0]!r} (required: {', '.join(REQUIRED_COLUMNS)})")
    out = pd.DataFrame(index=range(len(frame)))
    ids = frame["id"]
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    if blank.any():
        raise InputError(where(int(np.argmax(blank.to_numpy())), "id"), "empty id")
    out["id"] = ids.astype(str).str.strip().to_numpy()
    duplicated = out["id"].duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        raise InputError(where(row, "id"), f"duplicate context id {out['id'][row]!r}")
    monthly = sorted((c for c in frame.columns if MONTHLY.match(str(c))), key=lambda c: int(str(c)[len("reuses_m"):]))
    for column in REQUIRED_COLUMNS[1:] + tuple(OPTIONAL_COLUMNS) + tuple(monthly):
        raw = frame[column] if column in frame.columns else pd.Series([None] * len(frame), dtype=object)
        empty = (raw.isna() | (raw.astype(str).str.strip() == "")).to_numpy()
        if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "integer", "floating", "empty",
                                                          "mixed-integer-float", "decimal"):
            is_bool = np.zeros(len(raw), dtype=bool)  # no cell can be a boolean (a fast path for big files)
        else:
            is_bool = raw.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        if is_bool.any():
            row = int(np.argmax(is_bool))
            raise InputError(where(row, column), f"expected a number, found {plain_value(raw.iloc[row])!r}")
        values = pd.to_numeric(raw.where(~empty), errors="coerce").to_numpy(dtype=float, copy=True)
        if column not in OPTIONAL_COLUMNS and empty.any():
            raise InputError(where(int(np.argmax(empty)), column), "expected a number, found an empty cell")
        bad = ~empty & ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(where(row, column), f"expected a finite number, found {plain_value(raw.iloc[row])!r}")
        values[empty] = OPTIONAL_COLUMNS.get(column, np.nan)  # NaN SLO: the workload's default applies
        present = ~np.isnan(values)
        if column in INTEGER_COLUMNS:
            fractional = present & (values != np.round(values))
            if fractional.any():
                row = int(np.argmax(fractional))
                raise InputError(where(row, column), f"expected a whole number, found {plain_value(raw.iloc[row])!r}")
            huge = present & (values > MAX_TOKENS)
            if huge.any():
                row = int(np.argmax(huge))
                raise InputError(where(row, column), f"expected at most {MAX_TOKENS:,.0f} tokens, "
                                 f"found {plain_value(raw.iloc[row])!r}")
        low = 1 if column == "tokens" else 0
        if column.endswith("_slo_s"):
            too_low = present & (values <= 0)
            expectation = "a number above 0"
        else:
            too_low = present & (values < low)
            expectation = f"a number >= {low}"
        if too_low.any():
            row = int(np.argmax(too_low))
            raise InputError(where(row, column), f"expected {expectation}, found {plain_value(raw.iloc[row])!r}")
        out[column] = values.astype(np.int64) if column in INTEGER_COLUMNS else values
    if model.max_context is not None:
        length = out["tokens"] + out["prompt_tokens"] + out["output_tokens"]
        over = (length > model.max_context).to_numpy()
        if over.any():
            row = int(np.argmax(over))
            raise InputError(where(row, "tokens"), f"context, prompt and output ({int(length[row])} tokens) "
                             f"exceed {model.name}'s max_context of {model.max_context}")
    return out


def _read_contexts_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401  (pandas reads Parquet through it)
        except ImportError:
            raise InputError(str(path), "reading Parquet needs pyarrow: pip install 'kvplan[parquet]'") from None
        try:
            return pd.read_parquet(path)
        except FileNotFoundError:
            raise InputError(str(path), "file not found") from None
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise InputError(str(path), f"not a readable Parquet file ({type(exc).__name__})") from None
    text = read_text(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas drops surplus fields otherwise
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""],
                               skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise InputError(str(path), "empty file (expected a header row: "
                         f"{', '.join(REQUIRED_COLUMNS)})") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        raise ragged_row_error(path, text) from None


def ragged_row_error(path: Path, text: str) -> InputError:
    """Find the first data row whose field count differs from the header's (rows count from 1)."""
    try:
        reader = csv.reader(text.splitlines(), skipinitialspace=True)
        header = next(reader, [])
        row = 0
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            row += 1
            if len(fields) != len(header):
                return InputError(f"{path}: row {row}", f"{len(fields)} fields, but the header has {len(header)}")
    except csv.Error as exc:
        return InputError(str(path), f"not valid CSV ({exc})")
    return InputError(str(path), "not valid CSV")


def parse_workload(data: Any, file: str, models: dict[str, ModelCard], base_dir: Path | None,
                   path: str = "") -> Workload:
    """A workload from its YAML data; `path` is the key path of that data inside `file` (for messages)."""
    root = Section(data, file, path)
    root.warn_unknown(_WORKLOAD_KEYS)
    if isinstance(root.raw("model"), dict):
        model = parse_model(root.section("model"))
    else:
        name = root.string("model")
        if name not in models:
            raise InputError(root.where("model"), f"unknown model {name!r} (known: {', '.join(sorted(models))})")
        model = models[name]
    slo = root.section("slo")
    slo.warn_unknown(("ttft_s", "tpot_s"))
    traffic = None
    if root.has("traffic"):
        t = root.section("traffic")
        t.warn_unknown(("requests_per_month", "prompt_tokens", "output_tokens"))
        traffic = Traffic(t.number("requests_per_month"), t.number("prompt_tokens", integer=True),
                          t.number("output_tokens", integer=True))
        if model.max_context is not None and traffic.prompt_tokens + traffic.output_tokens > model.max_context:
            raise InputError(t.where("prompt_tokens"), f"prompt and output exceed {model.name}'s max_context "
                             f"of {model.max_context}")
    inputs: dict[str, str] = {}
    if root.has("contexts") and root.has("contexts_file"):
        raise InputError(root.where("contexts_file"), "give either contexts or contexts_file, not both")
    if root.has("contexts_file"):
        if base_dir is None:
            raise InputError(root.where("contexts_file"), "not allowed here: give the contexts inline")
        path = base_dir / root.string("contexts_file")
        frame = _read_contexts_file(path)
        contexts = check_contexts(frame, _row_locator(str(path), inline=False), str(path), model)
        inputs[str(path)] = file_sha256(path)
    elif root.has("contexts"):
        items = root.raw("contexts")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InputError(root.where("contexts"), "expected a list of mappings (id, tokens, ...)")
        frame = pd.DataFrame(items)
        if frame.empty:
            frame = pd.DataFrame(columns=list(REQUIRED_COLUMNS))
        contexts = check_contexts(frame, _row_locator(file, inline=True), root.where("contexts"), model)
    else:
        contexts = check_contexts(pd.DataFrame(columns=list(REQUIRED_COLUMNS)), _row_locator(file, True),
                                  file, model)
    if contexts.empty and (traffic is None or traffic.requests_per_month == 0):
        raise InputError(root.where("contexts"), "empty workload: no contexts and no background traffic")
    workload = Workload(
        model=model,
        mode=root.string("mode", "provisioned", choices=MODES),
        hours_per_month=root.number("hours_per_month", 730.0, positive=True),
        peak_to_mean=root.number("peak_to_mean", 1.0, positive=True),
        pricing=root.string("pricing", "on_demand", choices=PRICINGS),
        ttft_slo_s=slo.number("ttft_s", positive=True),
        tpot_slo_s=slo.number("tpot_s", None, positive=True),
        traffic=traffic,
        contexts=contexts,
        name=root.string("name", default_name(file)),
        inputs=inputs,
        slo_policy=root.string("slo_policy", "strict", choices=SLO_POLICIES),
    )
    _warn_unit_slips(workload, root, contexts_where=_row_locator(
        str(base_dir / root.string("contexts_file")) if root.has("contexts_file") and base_dir else file,
        inline=not root.has("contexts_file")))
    return workload


def _warn_unit_slips(w: Workload, root: Section, contexts_where: Callable[[int, str], str]) -> None:
    """Values that are allowed but probably typed in the wrong unit."""
    if w.hours_per_month > 744:
        warn(root.where("hours_per_month"), f"{w.hours_per_month:g} hours is more than a month has (744)")
    if w.peak_to_mean < 1:
        warn(root.where("peak_to_mean"), f"{w.peak_to_mean:g}: a peak below the mean?")
    if w.ttft_slo_s > MAX_PLAUSIBLE_TTFT_S:
        warn(root.where("slo.ttft_s"), f"{w.ttft_slo_s:g} s to first token: milliseconds?")
    if w.tpot_slo_s is not None and w.tpot_slo_s > MAX_PLAUSIBLE_TPOT_S:
        warn(root.where("slo.tpot_s"), f"{w.tpot_slo_s:g} s per output token: milliseconds?")
    for column, limit, unit in (("ttft_slo_s", MAX_PLAUSIBLE_TTFT_S, "to first token"),
                                ("tpot_slo_s", MAX_PLAUSIBLE_TPOT_S, "per output token")):
        over = (w.contexts[column] > limit).to_numpy()
        if over.any():
            row = int(np.argmax(over))
            warn(contexts_where(row, column), f"{w.contexts[column][row]:g} s {unit}: milliseconds? "
                 f"({int(over.sum())} rows like it)")


def default_name(file: str) -> str:
    path = Path(file)
    return path.resolve().parent.name if path.stem == "workload" else path.stem


def load_workload(path: Path, models: dict[str, ModelCard] | None = None) -> Workload:
    models = models if models is not None else load_models()
    workload = parse_workload(load_yaml(path), str(path), models, path.parent)
    return Workload(**{**workload.__dict__, "inputs": {str(path): file_sha256(path), **workload.inputs}})
