"""Sanity checks of a catalog that parsed: figures that are allowed but probably wrong."""

from __future__ import annotations

from .catalog import ATTACHED_KINDS, Catalog, shared_gpu, unit_slips

# The figures that tell one variant of a part from another (SXM vs PCIe); memory size is "as the cloud reports
# it" and may differ between catalogs for the same part.
_PART_FIGURES = ("hbm_gbps", "tflops")


def _has_source(entry: dict) -> bool:
    return bool(entry.get("source")) and bool(entry.get("as_of"))


def sanity_warnings(catalog: Catalog, unit_slips_only: bool = False) -> list[str]:
    """Warnings about a catalog; `unit_slips_only` keeps those that are probably a wrong unit (every command
    prints these when it loads a catalog; `kvplan catalogs validate` prints them all)."""
    warnings = unit_slips(catalog)
    return warnings if unit_slips_only else warnings + _doubtful(catalog)


def _doubtful(catalog: Catalog) -> list[str]:
    raw = catalog.raw
    warnings: list[str] = []
    if not raw.get("as_of"):
        warnings.append("as_of: missing: a catalog states the date of its figures")
    for i, (offering, entry) in enumerate(zip(catalog.offerings, raw.get("offerings", []))):
        where = f"offerings[{i}] ({offering.name})"
        prices = offering.prices
        for key, value in prices.items():
            if value == 0:
                warnings.append(f"{where}.price_per_hour.{key}: zero price")
        spot, on_demand = prices.get("spot"), prices["on_demand"]
        if spot is not None and spot > on_demand:
            warnings.append(f"{where}.price_per_hour.spot: {spot:g} is above on-demand {on_demand:g}")
        elif spot is not None and spot == on_demand and spot > 0:
            warnings.append(f"{where}.price_per_hour.spot: equals on-demand (probably no spot data)")
        for key in ("reserved_1y", "reserved_3y"):
            if key in prices and prices[key] > on_demand:
                warnings.append(f"{where}.price_per_hour.{key}: {prices[key]:g} is above on-demand {on_demand:g}")
        shapes = offering.gpu.shapes
        if shapes and offering.gpus not in shapes:
            warnings.append(f"{where}.gpus: {offering.gpus} x {offering.gpu.name} is not a known shape "
                            f"(sold as {', '.join(map(str, shapes))})")
        if not _has_source(entry):
            warnings.append(f"{where}: missing source or as_of")
    for i, (tier, entry) in enumerate(zip(catalog.tiers, raw.get("tiers", []))):
        where = f"tiers[{i}] ({tier.name})"
        if tier.kind in ATTACHED_KINDS:
            continue
        if tier.price_gb_month == 0 and tier.node_price_per_hour is None:
            warnings.append(f"{where}.price_gb_month: zero price")
        if not _has_source(entry):
            warnings.append(f"{where}: missing source or as_of")
    for name, spec in raw.get("gpus", {}).items():
        if isinstance(spec, dict) and not _has_source(spec):
            warnings.append(f"gpus.{name}: missing source or as_of")
    return warnings + _shadowed_parts(catalog)


def _shadowed_parts(catalog: Catalog) -> list[str]:
    """A catalog's own GPU spec under a gpus.yaml name but with another bandwidth or compute figure is a
    different part (e.g. a PCIe card under the SXM part's name) and needs its own name."""
    used = {offering.gpu.name: offering.gpu for offering in catalog.offerings}
    warnings = []
    for name, gpu in sorted(used.items()):
        shared = shared_gpu(name)
        if shared is None:
            continue
        for key in _PART_FIGURES:
            ours, theirs = getattr(gpu, key), getattr(shared, key)
            if ours != theirs:
                warnings.append(f"gpus.{name}.{key}: {ours:g} here, {theirs:g} in catalogs/gpus.yaml for the same "
                                "name: a different part needs its own name")
    return warnings
