"""Scenarios: what-ifs as overrides of the workload and the catalog (Calliope-style), listed by name, as grids,
or as seeded random draws.

A scenario is a flat mapping of parameters to values. A parameter is one of
    catalog              a catalog (bundled name or path): the scenario plans on it instead
    reuse_scale          every context's reuses_per_month, and the background requests, times this
    gpu_price_scale      every offering's prices times this; or {GPU: factor} for offerings of those GPUs
    storage_price_scale  every tier's price per GB-month times this
    workload.<path>      a key of the workload file, e.g. workload.peak_to_mean, workload.slo.ttft_s
    catalog.<path>       a key laid over the catalog as a file that `extends` it would, e.g.
                         catalog.discounts.on_demand, catalog.defaults.utilization_max
The scenarios file:

    scenarios:                       # named scenarios; nested workload:/catalog: mappings are allowed
      - {name: base}
      - {name: reuse-2x, reuse_scale: 2.0}
      - {name: h100-cheaper, gpu_price_scale: {H100: 0.7}}
    grid:                            # every combination of these values
      catalog: [aws, gcp]
      workload.pricing: [on_demand, spot]
    random:                          # seeded draws; each parameter from a named distribution
      samples: 200                   # (--samples overrides)
      seed: 0
      parameters:
        reuse_scale: {lognormal: {mean: 0.0, sigma: 0.3}}
        gpu_price_scale: {uniform: {low: 0.7, high: 1.0}}
        workload.peak_to_mean: {triangular: {low: 1.5, mode: 2.0, high: 3.0}}

Named scenarios come first, then the grid, then the draws; ids are the names, grid-0001..., draw-0001....
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs.catalog import Catalog, ModelCard, extend, parse_catalog, resolve_catalog_path
from ..inputs.errors import InputError
from ..inputs.fields import Section, load_yaml
from ..inputs.workload import Workload, parse_workload, plain_value

SPECIAL = ("catalog", "reuse_scale", "gpu_price_scale", "storage_price_scale")
DISTRIBUTIONS = {  # name -> (parameters, draw)
    "uniform": (("low", "high"), lambda rng, p: rng.uniform(p["low"], p["high"])),
    "normal": (("mean", "sd"), lambda rng, p: rng.normal(p["mean"], p["sd"])),
    "lognormal": (("mean", "sigma"), lambda rng, p: rng.lognormal(p["mean"], p["sigma"])),
    "triangular": (("low", "mode", "high"), lambda rng, p: rng.triangular(p["low"], p["mode"], p["high"])),
    "choice": (("values",), lambda rng, p: p["values"][int(rng.integers(len(p["values"])))]),
}


@dataclass(frozen=True)
class Scenario:
    id: str
    parameters: dict[str, Any]    # flat: parameter -> value


def _flatten(section: Section, prefix: str = "") -> dict[str, Any]:
    """A named scenario's parameters, nested workload:/catalog: mappings as dotted paths (lists and the values
    of the special parameters, such as gpu_price_scale's {GPU: factor}, stay whole)."""
    out = {}
    for key, value in section.data.items():
        if key == "name" and not prefix:
            continue
        if isinstance(value, dict) and (prefix or key in ("workload", "catalog")):
            out.update(_flatten(section.section(key), f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _check_parameter(name: str, where: str) -> None:
    if name not in SPECIAL and not name.startswith(("workload.", "catalog.")):
        raise InputError(where, f"unknown parameter {name!r} (expected one of {', '.join(SPECIAL)}, "
                                "workload.<key> or catalog.<key>)")


def load_scenarios(path: Path, samples: int | None = None) -> list[Scenario]:
    """The scenarios of a scenarios file, in order."""
    root = Section(load_yaml(path), str(path))
    root.warn_unknown(("scenarios", "grid", "random"))
    out: list[Scenario] = []
    for item in root.sections("scenarios", []):
        parameters = _flatten(item)
        for name in parameters:
            _check_parameter(name, item.where(name.split(".")[0]))
        out.append(Scenario(item.string("name"), parameters))
    if root.has("grid"):
        grid = root.section("grid")
        names = list(grid.data)
        values = []
        for name in names:
            _check_parameter(name, grid.where(name))
            options = grid.raw(name)
            if not isinstance(options, list) or not options:
                raise InputError(grid.where(name), "expected a non-empty list of values")
            values.append(options)
        for i, combo in enumerate(itertools.product(*values), start=1):
            out.append(Scenario(f"grid-{i:04d}", dict(zip(names, combo))))
    if root.has("random"):
        random = root.section("random")
        random.warn_unknown(("samples", "seed", "parameters"))
        n = samples if samples is not None else random.number("samples", 100, integer=True, minimum=1)
        rng = np.random.default_rng(random.number("seed", 0, integer=True))
        parameters = random.section("parameters")
        draws = []
        for name in parameters.data:
            _check_parameter(name, parameters.where(name))
            spec = parameters.section(name)
            if len(spec.data) != 1 or next(iter(spec.data)) not in DISTRIBUTIONS:
                raise InputError(spec.where(), f"expected one distribution of {', '.join(DISTRIBUTIONS)}")
            kind = next(iter(spec.data))
            keys, draw = DISTRIBUTIONS[kind]
            args = spec.section(kind)
            args.warn_unknown(keys)
            values = {k: (args.raw(k) if k == "values" else args.number(k, minimum=None)) for k in keys}
            draws.append((name, draw, values))
        for i in range(1, n + 1):
            out.append(Scenario(f"draw-{i:04d}", {name: plain_value(draw(rng, values)) for name, draw, values in draws}))
    ids = [s.id for s in out]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(str(path), f"scenario names repeat: {', '.join(duplicates)}")
    if not out:
        raise InputError(str(path), "no scenarios (expected scenarios:, grid: or random:)")
    return out


def _set(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[keys[-1]] = value


def _scaled(value, factor: float):
    """A price (a number, or {value: number, ...}) times a factor."""
    if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
        return {**value, "value": value["value"] * factor}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * factor
    return value


@dataclass(frozen=True)
class Base:
    """What every scenario starts from: the workload file's data and the catalog reference."""
    workload_data: dict
    workload_file: str
    catalog_ref: str
    scenarios_file: str


def load_base(workload_path: Path, catalog_ref: str, scenarios_file: Path) -> Base:
    return Base(load_yaml(workload_path), str(workload_path), catalog_ref, str(scenarios_file))


def apply(b: Base, scenario: Scenario, models: dict[str, ModelCard]) -> tuple[Workload, Catalog]:
    """The workload and catalog of one scenario."""
    p = scenario.parameters
    where = f"{b.scenarios_file}: scenario {scenario.id}"
    data = copy.deepcopy(b.workload_data)
    for name, value in p.items():
        if name.startswith("workload."):
            _set(data, name[len("workload."):], value)
    workload = parse_workload(data, b.workload_file, models, Path(b.workload_file).parent)
    scale = p.get("reuse_scale")
    if scale is not None:
        if not isinstance(scale, (int, float)) or scale < 0:
            raise InputError(where, f"reuse_scale: expected a number >= 0, found {scale!r}")
        contexts = workload.contexts.copy()
        contexts["reuses_per_month"] = contexts["reuses_per_month"] * scale
        traffic = workload.traffic
        if traffic is not None:
            traffic = type(traffic)(traffic.requests_per_month * scale, traffic.prompt_tokens, traffic.output_tokens)
        workload = Workload(**{**workload.__dict__, "contexts": contexts, "traffic": traffic})

    ref = str(p.get("catalog", b.catalog_ref))
    path = resolve_catalog_path(ref)
    overlay: dict[str, Any] = {"extends": str(path.resolve())}
    for name, value in p.items():
        if name.startswith("catalog."):
            _set(overlay, name[len("catalog."):], value)
    raw = extend(overlay, b.scenarios_file)
    gpu_scale = p.get("gpu_price_scale")
    if gpu_scale is not None:
        factors = gpu_scale if isinstance(gpu_scale, dict) else None
        offerings = []
        for offering in raw.get("offerings", []):
            factor = gpu_scale if factors is None else factors.get(offering.get("gpu"), 1.0)
            if not isinstance(factor, (int, float)) or factor < 0:
                raise InputError(where, f"gpu_price_scale: expected numbers >= 0, found {factor!r}")
            prices = offering.get("price_per_hour")
            prices = {k: _scaled(v, factor) for k, v in prices.items()} if isinstance(prices, dict) \
                else _scaled(prices, factor)
            offerings.append({**offering, "price_per_hour": prices})
        raw["offerings"] = offerings
    storage_scale = p.get("storage_price_scale")
    if storage_scale is not None:
        raw["tiers"] = [{**tier, "price_gb_month": _scaled(tier.get("price_gb_month", 0.0), storage_scale)}
                        for tier in raw.get("tiers", [])]
    catalog = parse_catalog(raw, f"{where} (catalog {ref})", models)
    return workload, catalog
