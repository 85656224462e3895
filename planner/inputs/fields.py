"""Typed reading of YAML mappings, so that every bad value is reported with its file and key path.

A figure may be written plainly (`price_gb_month: 0.023`) or with its own provenance
(`{value: 0.023, source: ..., as_of: ..., estimated: true, note: ...}`); estimated figures are recorded
so that a plan can say which ones it used.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, warn

MISSING: Any = object()
_NUMBER = re.compile(r"^[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?$")
PROVENANCE_KEYS = {"value", "source", "as_of", "estimated", "note"}


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text (byte {exc.start})") from None


MAX_YAML_BYTES = 64 * 2**20   # YAML is for settings and catalogs; contexts at scale belong in CSV or Parquet
MAX_NODES = 10_000_000        # values in a document once aliases are expanded: bounds "billion laughs" files


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no object construction) that refuses documents whose aliases expand to more than
    MAX_NODES values: aliases share objects, but whatever walks the result walks every expansion."""

    def compose_document(self):
        node = super().compose_document()
        weights: dict[int, int] = {}

        def weight(n) -> int:
            if id(n) not in weights:
                weights[id(n)] = 1  # a cycle counts once
                children = n.value if isinstance(n, yaml.SequenceNode) else (
                    [part for pair in n.value for part in pair] if isinstance(n, yaml.MappingNode) else [])
                weights[id(n)] = 1 + sum(weight(child) for child in children)
                if weights[id(n)] > MAX_NODES:
                    raise yaml.YAMLError(f"aliases expand to more than {MAX_NODES:,} values")
            return weights[id(n)]

        if node is not None:
            weight(node)
        return node


def load_yaml(path: Path) -> Any:
    """Parse a YAML (or JSON) file safely, naming the line of a syntax error."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_text names the problem
    if path.suffix == ".json":
        text = read_text(path)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(str(path), f"line {exc.lineno}: JSON syntax error: {exc.msg}") from None
    if size > MAX_YAML_BYTES:
        raise InputError(str(path), f"{size / 2**20:,.0f} MiB is too large for a YAML file (at most "
                         f"{MAX_YAML_BYTES // 2**20} MiB): put contexts in a CSV or Parquet contexts_file")
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(str(path), f"{line}YAML syntax error: {problem}") from None
    except RecursionError:
        raise InputError(str(path), "YAML nested too deeply") from None


def as_number(value: Any, where: str) -> float:
    """A finite number; numeric strings such as '1e6' (which YAML 1.1 leaves as text) are accepted."""
    if isinstance(value, bool):
        raise InputError(where, f"expected a number, found {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value.strip().replace("_", ""))
    else:
        raise InputError(where, f"expected a number, found {_show(value)}")
    if not math.isfinite(number):
        raise InputError(where, f"expected a finite number, found {value!r}")
    return number


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


class Section:
    """One mapping of an input file, read key by key with checked types."""

    def __init__(self, data: Any, file: str, path: str = "", estimated: list[str] | None = None):
        self.file = file
        self.path = path
        self.estimated = estimated if estimated is not None else []
        if not isinstance(data, Mapping):
            raise InputError(self.where(), f"expected a mapping, found {_show(data)}")
        self.data = data

    def where(self, key: str | None = None) -> str:
        path = ".".join(p for p in (self.path, key) if p)
        return f"{self.file}: {path}" if path else self.file

    def key_path(self, key: str) -> str:
        return ".".join(p for p in (self.path, key) if p)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = MISSING) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is MISSING:
                raise InputError(self.where(key), "missing key")
            return default
        return value

    def _figure(self, key: str, default: Any) -> Any:
        """The value of a figure, unwrapping a provenance mapping and recording estimates."""
        value = self.raw(key, default)
        if isinstance(value, Mapping) and "value" in value:
            unknown = set(value) - PROVENANCE_KEYS
            if unknown:
                raise InputError(self.where(key), f"unknown key '{sorted(unknown)[0]}' in a figure "
                                 f"(expected {', '.join(sorted(PROVENANCE_KEYS))})")
            if value.get("estimated"):
                self.estimated.append(self.key_path(key))
            return default if value["value"] is None else value["value"]
        return value

    def number(self, key: str, default: Any = MISSING, *, minimum: float | None = 0.0,
               positive: bool = False, integer: bool = False) -> Any:
        value = self._figure(key, default)
        if value is None:  # an unknown figure, where the caller allows one (default None)
            return None
        number = as_number(value, self.where(key))
        if positive and number <= 0:
            raise InputError(self.where(key), f"expected a number above 0, found {value!r}")
        if minimum is not None and number < minimum:
            raise InputError(self.where(key), f"expected a number >= {minimum:g}, found {value!r}")
        if integer:
            if number != int(number):
                raise InputError(self.where(key), f"expected a whole number, found {value!r}")
            return int(number)
        return number

    def string(self, key: str, default: Any = MISSING, choices: Iterable[str] | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if hasattr(value, "isoformat"):  # YAML reads `as_of: 2026-11-26` as a date
            value = value.isoformat()
        if not isinstance(value, str):
            raise InputError(self.where(key), f"expected text, found {_show(value)}")
        if choices is not None and value not in choices:
            raise InputError(self.where(key), f"expected one of {', '.join(choices)}, found {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._figure(key, default)
        if not isinstance(value, bool):
            raise InputError(self.where(key), f"expected true or false, found {_show(value)}")
        return value

    def section(self, key: str, default: Any = MISSING) -> Section:
        value = self.raw(key, default)
        return Section(value, self.file, self.key_path(key), self.estimated)

    def sections(self, key: str, default: Any = MISSING) -> list[Section]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise InputError(self.where(key), f"expected a list, found {_show(value)}")
        return [Section(item, self.file, f"{self.key_path(key)}[{i}]", self.estimated)
                for i, item in enumerate(value)]

    def warn_unknown(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                warn(self.where(str(key)), f"unknown key, ignored{hint}")
