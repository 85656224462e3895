"""Readers of request traces, checked line by line: a bad or truncated line is reported with its number.

- Mooncake (FAST'25 release, JSON lines): `timestamp` (ms), `input_length`, `output_length`, `hash_ids`
  (ids of the 512-token prefix blocks of the input).
- Azure LLM inference (CSV): `TIMESTAMP`, `ContextTokens`, `GeneratedTokens`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .fields import read_text

MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MAX_TOKENS = 10**9


def _whole(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or value != int(value) or value < 0 or value > MAX_TOKENS * 1000:
        raise InputError(where, f"{key}: expected a whole number >= 0, found {value!r}")
    return int(value)


def read_mooncake(path: Path) -> pd.DataFrame:
    """One row per request: line (its line number, to point back at it), timestamp_ms, input_length,
    output_length, hash_ids (a list of ints)."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = " (truncated?)" if exc.pos >= len(line.rstrip()) else ""
            raise InputError(where, f"not a JSON object{cut}: {exc.msg} at column {exc.colno}") from None
        if not isinstance(item, dict):
            raise InputError(where, f"expected a JSON object, found {type(item).__name__}")
        missing = [key for key in MOONCAKE_KEYS if key not in item]
        if missing:
            raise InputError(where, f"missing key {missing[0]!r} (a Mooncake trace line has "
                             f"{', '.join(MOONCAKE_KEYS)})")
        hashes = item["hash_ids"]
        if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes):
            raise InputError(where, "hash_ids: expected a list of whole numbers")
        rows.append((number, _whole(item["timestamp"], where, "timestamp"),
                     _whole(item["input_length"], where, "input_length"),
                     _whole(item["output_length"], where, "output_length"), hashes))
    if not rows:
        raise InputError(str(path), "no requests in the trace")
    frame = pd.DataFrame(rows, columns=["line", "timestamp_ms", "input_length", "output_length", "hash_ids"])
    return frame


def read_azure(path: Path) -> pd.DataFrame:
    """One row per request: time (pandas Timestamp), context_tokens, generated_tokens."""
    text = read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""], index_col=False)
    except pd.errors.EmptyDataError:
        raise InputError(str(path), f"empty file (expected a header: {', '.join(AZURE_COLUMNS)})") from None
    except pd.errors.ParserError as exc:
        raise InputError(str(path), f"not valid CSV ({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in AZURE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(str(path), f"missing column {missing[0]!r} (an Azure LLM trace has "
                         f"{', '.join(AZURE_COLUMNS)})")
    if frame.empty:
        raise InputError(str(path), "no requests in the trace")
    out = pd.DataFrame(index=frame.index)
    times = pd.to_datetime(frame["TIMESTAMP"], errors="coerce", format="mixed")
    if times.isna().any():
        row = int(np.argmax(times.isna().to_numpy()))
        raise InputError(f"{path}: row {row + 1}, column TIMESTAMP",
                         f"expected a date and time, found {frame['TIMESTAMP'][row]!r}")
    out["time"] = times
    for column, name in (("ContextTokens", "context_tokens"), ("GeneratedTokens", "generated_tokens")):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values > MAX_TOKENS)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"{path}: row {row + 1}, column {column}",
                             f"expected a whole number >= 0, found {frame[column][row]!r}")
        out[name] = values.astype(np.int64)
    return out
