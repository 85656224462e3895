"""Sanity checks of a catalog that parsed: figures that are allowed but probably wrong."""

from __future__ import annotations

from .catalog import ATTACHED_KINDS, Catalog, shared_gpu

STORAGE_PER_GB_MONTH_MAX = 1.0   # block, file and object storage above $1/GB-month is likely priced per TB
NETWORK_GBPS_MAX = 3200          # the largest instance network links (e.g. 3,200 Gbit/s EFA on p5)
READ_GBPS_MAX = 400              # one load faster than 400 GB/s would beat any host or network path
# Providers whose storage "GB" is 2^30 bytes (sources in catalogs/SCHEMA.md, "price_unit"): a round list price
# given per GB-month there is most likely the per-GiB figure, 7.4% above the price per GB.
GIB_BILLING_PROVIDERS = ("aws", "gcp", "azure")
_PRICED_STORAGE = ("block", "file", "object")
# The figures that tell one variant of a part from another (SXM vs PCIe); memory size is "as the cloud reports
# it" and may differ between catalogs for the same part.
_PART_FIGURES = ("hbm_gbps", "tflops")


def _has_source(entry: dict) -> bool:
    return bool(entry.get("source")) and bool(entry.get("as_of"))


def sanity_warnings(catalog: Catalog, unit_slips_only: bool = False) -> list[str]:
    """Warnings about a catalog; `unit_slips_only` keeps those that are probably a wrong unit (every command
    prints these when it loads a catalog; `kvplan catalogs validate` prints them all)."""
    warnings = _unit_slips(catalog)
    return warnings if unit_slips_only else warnings + _doubtful(catalog)


def _unit_slips(catalog: Catalog) -> list[str]:
    warnings = []
    for i, offering in enumerate(catalog.offerings):
        where = f"offerings[{i}] ({offering.name})"
        if offering.network_gbps is not None and offering.network_gbps > NETWORK_GBPS_MAX:
            warnings.append(f"{where}.network_gbps: {offering.network_gbps:g} Gbit/s is above any instance link "
                            f"({NETWORK_GBPS_MAX} Gbit/s): Mbit/s?")
    for i, tier in enumerate(catalog.tiers):
        where = f"tiers[{i}] ({tier.name})"
        if tier.kind in ATTACHED_KINDS:
            continue
        if tier.kind != "memory_service" and tier.price_gb_month > STORAGE_PER_GB_MONTH_MAX:
            warnings.append(f"{where}.price_gb_month: ${tier.price_gb_month:g} per GB-month looks like a price "
                            "per TB-month")
        if tier.read_gbps is not None and tier.read_gbps > READ_GBPS_MAX:
            warnings.append(f"{where}.read_gbps: {tier.read_gbps:g} GB/s is above any path into an instance: "
                            "Gbit/s or MB/s?")
        if catalog.provider in GIB_BILLING_PROVIDERS and tier.kind in _PRICED_STORAGE \
                and tier.price_unit == "GB-month" and _list_price(tier.price_gb_month):
            warnings.append(f"{where}.price_gb_month: ${tier.price_gb_month:g} looks like {catalog.provider}'s "
                            "list price per GiB-month (2^30 B): state price_unit: GiB-month, or give the price "
                            "per GB (1e9 B)")
    return warnings


def _list_price(price: float) -> bool:
    """A positive price with at most four decimals, as providers list them (a converted one rarely is)."""
    return price > 0 and abs(price * 1e4 - round(price * 1e4)) < 1e-6


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
