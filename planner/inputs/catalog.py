"""Model cards and provider catalogs (MODEL.md §3.1, §3.2), read from YAML into typed records.

The schema, units and provenance rules are in catalogs/SCHEMA.md. A catalog is one provider, one region,
one date; a bundled catalog is named by its file stem (`aws` -> catalogs/aws.yaml).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, warn
from .fields import MISSING, Section, load_yaml
from .profiles import Profile, merge_profiles, parse_profiles

ATTACHED_KINDS = ("hbm", "host_memory", "local_nvme")
REMOTE_KINDS = ("block", "file", "object", "memory_service")
PRICINGS = ("on_demand", "spot", "reserved_1y", "reserved_3y")
STORAGE_PER_GB_MONTH_MAX = 1.0   # block, file and object storage above $1/GB-month is likely priced per TB
NETWORK_GBPS_MAX = 3200          # the largest instance network links (e.g. 3,200 Gbit/s EFA on p5)
READ_GBPS_MAX = 400              # one load faster than 400 GB/s would beat any host or network path
# Providers whose storage "GB" is 2^30 bytes (sources in catalogs/SCHEMA.md, "price_unit"): a round list price
# given per GB-month there is most likely the per-GiB figure, 7.4% above the price per GB.
GIB_BILLING_PROVIDERS = ("aws", "gcp", "azure")
_PRICED_STORAGE = ("block", "file", "object")
EFFICIENCY_DEFAULTS: dict[str, float] = {
    "prefill_mfu": 0.4,
    "decode_mbu": 0.6,
    "decode_batch": 32,
    "utilization_max": 0.8,
    "hbm_cache_fraction": 0.5,
    "host_cache_fraction": 0.5,
    "nvme_cache_fraction": 0.9,
    "load_blocks_gpu": 0.0,   # a flag (true/false in YAML): a cache load holds the GPU idle (MODEL.md §4)
}
_FLAGS = {"load_blocks_gpu"}
_FRACTIONS = {"prefill_mfu", "decode_mbu", "utilization_max", "hbm_cache_fraction", "host_cache_fraction",
              "nvme_cache_fraction"}
_ENTRY = ("source", "as_of", "note")
GB_PER_GIB = 2**30 / 1e9  # 1.073741824: a price per GiB divided by this is the price per GB (MODEL.md §1)
# The byte unit a tier's per-byte prices are stated in (storage per unit-month; retrieval and transfer per unit),
# and how many GB one such unit holds.
PRICE_UNITS: dict[str, float] = {"GB-month": 1.0, "GiB-month": GB_PER_GIB}


def bundled_dir() -> Path:
    """Where the bundled catalogs are: installed beside the package (planner/catalogs), or, in a source
    checkout or editable install, the repository's top-level catalogs/."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "catalogs"
    return installed if (installed / "models.yaml").exists() else package.parent / "catalogs"


def bundled_names() -> list[str]:
    """The bundled catalogs' names (their file stems), without the model cards and GPU specs."""
    return sorted(p.stem for p in bundled_dir().glob("*.yaml") if p.stem not in ("models", "gpus"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- model cards -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelCard:
    name: str
    params_b: float
    total_params_b: float
    n_layers: int
    n_heads: int
    attn_head_dim: float
    max_context: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    kv_dtype_bytes: float = 2
    weight_dtype_bytes: float = 2
    source: str = ""

    @property
    def kv_bytes_per_token(self) -> float:
        """MODEL.md §3.1: 2·layers·kv_heads·head_dim·bytes, or layers·(lora_rank + rope_dim)·bytes (latent)."""
        if self.kv_lora_rank is not None:
            return self.n_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * self.kv_dtype_bytes
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_dtype_bytes

    @property
    def weight_bytes(self) -> float:
        """W: all weights, held in HBM."""
        return self.total_params_b * 1e9 * self.weight_dtype_bytes

    @property
    def weight_read_bytes(self) -> float:
        """W_read: the weights one decode step reads (active experts only for mixture-of-experts)."""
        return self.params_b * 1e9 * self.weight_dtype_bytes


def parse_model(section: Section) -> ModelCard:
    latent = section.has("kv_lora_rank")
    shape = ("kv_lora_rank", "qk_rope_head_dim", "attn_head_dim") if latent else ("n_kv_heads", "head_dim")
    section.warn_unknown(("name", "params_b", "total_params_b", "max_context", "n_layers", "n_heads",
                          "n_kv_heads", "head_dim", "kv_lora_rank", "qk_rope_head_dim", "attn_head_dim",
                          "kv_dtype_bytes", "weight_dtype_bytes") + _ENTRY)
    values = {key: section.number(key, positive=True, integer=key != "attn_head_dim") for key in shape}
    params_b = section.number("params_b", positive=True)
    head_dim = values.get("head_dim")
    return ModelCard(
        name=section.string("name"),
        params_b=params_b,
        total_params_b=section.number("total_params_b", params_b, positive=True),
        n_layers=section.number("n_layers", positive=True, integer=True),
        n_heads=section.number("n_heads", positive=True, integer=True),
        attn_head_dim=values.get("attn_head_dim", head_dim),
        max_context=section.number("max_context", None, positive=True, integer=True),
        n_kv_heads=values.get("n_kv_heads"),
        head_dim=head_dim,
        kv_lora_rank=values.get("kv_lora_rank"),
        qk_rope_head_dim=values.get("qk_rope_head_dim"),
        kv_dtype_bytes=section.number("kv_dtype_bytes", 2, positive=True),
        weight_dtype_bytes=section.number("weight_dtype_bytes", 2, positive=True),
        source=section.string("source", ""),
    )


def load_models(path: Path | None = None) -> dict[str, ModelCard]:
    path = path or bundled_dir() / "models.yaml"
    root = Section(load_yaml(path), str(path))
    cards: dict[str, ModelCard] = {}
    for item in root.sections("models"):
        card = parse_model(item)
        if card.name in cards:
            raise InputError(item.where("name"), f"duplicate model {card.name!r}")
        cards[card.name] = card
    return cards


# --- catalogs --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gpu:
    name: str
    tflops: float
    hbm_gb: float
    hbm_gbps: float
    pcie_gbps: float | None
    shapes: tuple[int, ...] = ()   # GPU counts per instance the clouds sell for this part


@dataclass(frozen=True)
class Calibration:
    """Prefill efficiency set so that `tokens` tokens of `model` take `seconds` on one replica."""
    model: ModelCard
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Offering:
    name: str
    gpu: Gpu
    gpus: int
    prices: dict[str, float]
    host_memory_gb: float | None
    local_nvme_gb: float | None
    local_nvme_gbps: float | None
    network_gbps: float | None
    block_storage_gbps: float | None
    max_instances: int | None
    efficiency: dict[str, float]
    calibration: Calibration | None = None


@dataclass(frozen=True)
class Tier:
    name: str
    kind: str
    price_gb_month: float = 0.0
    read_request_price: float = 0.0
    write_request_price: float = 0.0
    retrieval_per_gb: float = 0.0
    transfer_per_gb: float = 0.0
    first_byte_latency_s: float = 0.0
    read_gbps: float | None = None
    object_tokens: int | None = None
    overlap_load: bool = False
    node_gb: float | None = None
    node_price_per_hour: float | None = None
    price_unit: str = "GB-month"   # as the catalog states it; the prices above are already per GB

    @property
    def unit_gb(self) -> float:
        """GB in one unit of the stated price (1.073741824 for GiB)."""
        return PRICE_UNITS[self.price_unit]

    @property
    def attached(self) -> bool:
        return self.kind in ATTACHED_KINDS


@dataclass(frozen=True)
class Catalog:
    name: str
    provider: str
    region: str
    currency: str
    as_of: str
    offerings: tuple[Offering, ...]
    tiers: tuple[Tier, ...]
    raw: dict[str, Any] = field(repr=False)
    path: str = ""
    sha256: str = ""
    estimated: tuple[str, ...] = ()
    profiles: tuple[Profile, ...] = ()

    def offering(self, name: str) -> Offering:
        for offering in self.offerings:
            if offering.name == name:
                return offering
        raise KeyError(name)


def _efficiency(section: Section, base: dict[str, float]) -> dict[str, float]:
    values = dict(base)
    for key in EFFICIENCY_DEFAULTS:
        if key in _FLAGS:
            if section.has(key):
                values[key] = float(section.boolean(key, False))
            continue
        if section.has(key):
            integer = key == "decode_batch"
            value = section.number(key, positive=True, integer=integer)
            if key in _FRACTIONS and value > 1:
                raise InputError(section.where(key), f"expected a fraction in (0, 1], found {value!r}")
            values[key] = value
    return values


def _calibration(section: Section, models: dict[str, ModelCard], base: Calibration | None) -> Calibration | None:
    if not section.has("prefill_calibration"):
        return base
    cal = section.section("prefill_calibration")
    model = cal.string("model")
    if model not in models:
        raise InputError(cal.where("model"), f"unknown model {model!r} (known: {', '.join(sorted(models))})")
    return Calibration(models[model], cal.number("tokens", positive=True, integer=True),
                       cal.number("seconds", positive=True))


def _gpu(name: str, section: Section) -> Gpu:
    section.warn_unknown(("tflops", "hbm_gb", "hbm_gbps", "pcie_gbps", "shapes") + _ENTRY)
    shapes = section.raw("shapes", [])
    if not isinstance(shapes, list) or not all(isinstance(n, int) and n > 0 for n in shapes):
        raise InputError(section.where("shapes"), f"expected a list of GPU counts, found {shapes!r}")
    return Gpu(name, section.number("tflops", positive=True), section.number("hbm_gb", positive=True),
               section.number("hbm_gbps", positive=True), section.number("pcie_gbps", None, positive=True),
               tuple(shapes))


def known_gpus() -> dict[str, Any]:
    """The shared GPU specs (catalogs/gpus.yaml), as raw mappings by GPU name."""
    path = bundled_dir() / "gpus.yaml"
    return dict(Section(load_yaml(path), str(path)).raw("gpus"))


def shared_gpu(name: str) -> Gpu | None:
    """The spec catalogs/gpus.yaml gives for `name`, or None where it has none."""
    spec = known_gpus().get(name)
    path = bundled_dir() / "gpus.yaml"
    return None if spec is None else _gpu(name, Section(spec, str(path), f"gpus.{name}"))


_OFFERING_KEYS = ("name", "gpu", "gpus", "price_per_hour", "host_memory_gb", "local_nvme_gb", "local_nvme_gbps",
                  "network_gbps", "block_storage_gbps", "max_instances", "prefill_calibration", "vcpus") \
    + tuple(EFFICIENCY_DEFAULTS) + _ENTRY


def _offering(section: Section, gpus: dict[str, Gpu], efficiency: dict[str, float],
              calibration: Calibration | None, models: dict[str, ModelCard]) -> Offering:
    section.warn_unknown(_OFFERING_KEYS)
    gpu = section.string("gpu")
    if gpu not in gpus:
        raise InputError(section.where("gpu"), f"unknown GPU {gpu!r} (not in this catalog's gpus)")
    if not isinstance(section.raw("price_per_hour"), dict):  # a plain number is the on-demand price
        prices = {"on_demand": section.number("price_per_hour")}
    else:
        price_section = section.section("price_per_hour")
        price_section.warn_unknown(PRICINGS + _ENTRY)
        prices = {key: price_section.number(key) for key in PRICINGS if price_section.has(key)}
        if "on_demand" not in prices:
            raise InputError(price_section.where("on_demand"), "missing key")
    max_instances = section.number("max_instances", None, integer=True)
    return Offering(
        name=section.string("name"),
        gpu=gpus[gpu],
        gpus=section.number("gpus", positive=True, integer=True),
        prices=prices,
        host_memory_gb=section.number("host_memory_gb", None),
        local_nvme_gb=section.number("local_nvme_gb", None),
        local_nvme_gbps=section.number("local_nvme_gbps", None, positive=True),
        network_gbps=section.number("network_gbps", None, positive=True),
        block_storage_gbps=section.number("block_storage_gbps", None, positive=True),
        max_instances=max_instances,
        efficiency=_efficiency(section, efficiency),
        calibration=_calibration(section, models, calibration),
    )


_TIER_KEYS = ("name", "kind", "price_gb_month", "read_request_price", "write_request_price", "retrieval_per_gb",
              "transfer_per_gb", "first_byte_latency_s", "read_gbps", "object_tokens", "overlap_load", "node_gb",
              "node_price_per_hour", "price_unit") + _ENTRY


def _assumed(section: Section, key: str, default: float | None, meaning: str) -> float | None:
    """A figure a remote tier should state; where it does not, say what is assumed instead."""
    if not section.has(key):
        warn(section.where(key), f"missing: assumed {meaning}")
        return default
    return section.number(key, positive=key == "read_gbps")


def _tier(section: Section) -> Tier:
    section.warn_unknown(_TIER_KEYS)
    name = section.string("name")
    kind = section.string("kind", choices=ATTACHED_KINDS + REMOTE_KINDS)
    if name == "recompute":
        raise InputError(section.where("name"), "'recompute' is reserved for recomputing from text")
    if kind in ATTACHED_KINDS:
        return Tier(name, kind, read_gbps=section.number("read_gbps", None, positive=True),
                    overlap_load=section.boolean("overlap_load", False))
    node_priced = section.has("node_price_per_hour") or section.has("node_gb")
    unit = section.string("price_unit", "GB-month", choices=tuple(PRICE_UNITS))
    gb = PRICE_UNITS[unit]  # the one conversion of prices stated per GiB to prices per GB
    return Tier(
        name=name,
        kind=kind,
        price_gb_month=section.number("price_gb_month", 0.0 if node_priced else MISSING) / gb,
        read_request_price=section.number("read_request_price", 0.0),
        write_request_price=section.number("write_request_price", 0.0),
        retrieval_per_gb=section.number("retrieval_per_gb", 0.0) / gb,
        transfer_per_gb=section.number("transfer_per_gb", 0.0) / gb,
        first_byte_latency_s=_assumed(section, "first_byte_latency_s", 0.0, "no first-byte latency"),
        read_gbps=_assumed(section, "read_gbps", None, "loads limited by the instance's path alone"),
        object_tokens=section.number("object_tokens", None, positive=True, integer=True),
        overlap_load=section.boolean("overlap_load", False),
        node_gb=section.number("node_gb", MISSING if node_priced else None, positive=True),
        node_price_per_hour=section.number("node_price_per_hour", MISSING if node_priced else None),
        price_unit=unit,
    )


CATALOG_KEYS = ("name", "provider", "region", "currency", "as_of", "defaults", "gpus", "offerings", "tiers",
                "profiles", "transfer", "description", "extends", "discounts", "remove_offerings",
                "remove_tiers") + _ENTRY


def _gpu_mapping(root: Section) -> dict[str, Any]:
    """`gpus:` as a mapping by GPU name, or as a list of mappings with a `name`."""
    if isinstance(root.raw("gpus", {}), list):
        return {str(item.string("name")): {k: v for k, v in item.data.items() if k != "name"}
                for item in root.sections("gpus")}
    return dict(root.section("gpus", {}).data)


def parse_catalog(data: Any, file: str, models: dict[str, ModelCard]) -> Catalog:
    """A catalog from its (already extended) YAML data. GPUs missing from its `gpus:` come from gpus.yaml, and
    the catalog's raw data then carries the specs of every GPU it uses, so a plan holding it is self-contained."""
    root = Section(data, file)
    root.warn_unknown(CATALOG_KEYS)
    defaults = root.section("defaults", {})
    defaults.warn_unknown(tuple(EFFICIENCY_DEFAULTS) + ("prefill_calibration",) + _ENTRY)
    efficiency = _efficiency(defaults, EFFICIENCY_DEFAULTS)
    calibration = _calibration(defaults, models, None)
    own = _gpu_mapping(root)
    shared = known_gpus()
    offering_sections = root.sections("offerings")
    used = {str(o.data.get("gpu")) for o in offering_sections}
    gpu_data = {name: shared[name] for name in sorted(used) if name in shared and name not in own} | own
    gpus = {name: _gpu(name, Section(spec, file if name in own else str(bundled_dir() / "gpus.yaml"),
                                     f"gpus.{name if name.isprintable() else repr(name)}", root.estimated))
            for name, spec in gpu_data.items()}  # a name with a line break stays on the error's one line
    offerings = [_offering(s, gpus, efficiency, calibration, models) for s in offering_sections]
    profiles = parse_profiles(root, models, set(gpus) | set(shared))
    tiers = [_tier(s) for s in root.sections("tiers", [])]
    for kind, items in (("offering", offerings), ("tier", tiers)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.name in seen:
                raise InputError(f"{file}: {kind}s[{i}].name", f"duplicate {kind} {item.name!r}")
            seen.add(item.name)
    if not offerings:
        raise InputError(root.where("offerings"), "no offerings: a catalog needs at least one GPU offering")
    return Catalog(
        name=root.string("name"),
        provider=root.string("provider", ""),
        region=root.string("region", ""),
        currency=root.string("currency", "USD"),
        as_of=root.string("as_of"),
        offerings=tuple(offerings),
        tiers=tuple(tiers),
        raw={**data, "gpus": gpu_data},
        path=file,
        estimated=tuple(dict.fromkeys(root.estimated)),
        profiles=profiles,
    )


def resolve_catalog_path(ref: str) -> Path:
    """A bundled catalog's name (`aws`) or a path to a catalog file."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in ref:
        return path
    bundled = bundled_dir() / f"{ref}.yaml"
    if not bundled.exists():
        names = sorted(p.stem for p in bundled_dir().glob("*.yaml") if p.stem not in ("models", "gpus"))
        shown = ref if ref.isprintable() else repr(ref)  # a name with a line break stays on one line
        raise InputError(f"--catalog {shown}", f"no bundled catalog of that name (bundled: {', '.join(names)})")
    return bundled


def extend(data: Any, file: str, seen: tuple[str, ...] = ()) -> Any:
    """Resolve `extends: BASE` (a bundled name, or a path relative to this file): the base catalog with this
    file's keys laid over it. Offerings, tiers and GPUs merge by name, field by field; `remove_offerings` and
    `remove_tiers` drop entries of the base; `discounts` (a fraction off per pricing, e.g. {on_demand: 0.2})
    scales every offering's price."""
    if not isinstance(data, dict):
        return data
    root = Section(data, file)
    merged = dict(data)
    if root.has("extends"):
        ref = root.string("extends")
        base_path = resolve_catalog_path(ref if "/" not in ref and not ref.endswith((".yaml", ".yml"))
                                         else str(Path(file).parent / ref))
        if str(base_path.resolve()) in seen:
            raise InputError(root.where("extends"), f"extends itself through {base_path}")
        base = extend(load_yaml(base_path), str(base_path), seen + (str(Path(file).resolve()),))
        if not isinstance(base, dict):
            raise InputError(str(base_path), "expected a mapping")
        merged = {**base, **{k: v for k, v in data.items() if k not in ("extends", "offerings", "tiers", "gpus")}}
        for key in ("defaults", "transfer"):
            if isinstance(base.get(key), dict) and isinstance(data.get(key), dict):
                merged[key] = {**base[key], **data[key]}
        merged["gpus"] = {**(base.get("gpus") or {}), **(data.get("gpus") or {})}
        for key in ("offerings", "tiers"):
            merged[key] = _merge_by_name(base.get(key) or [], root.sections(key, []))
        if base.get("profiles") or data.get("profiles"):
            overrides = data.get("profiles") or []
            merged["profiles"] = (merge_profiles(base.get("profiles") or [], overrides)
                                  if isinstance(overrides, list) else overrides)  # parse_catalog reports it
    for key, kind in (("remove_offerings", "offerings"), ("remove_tiers", "tiers")):
        if root.has(key):
            names = root.raw(key)
            if not isinstance(names, list):
                raise InputError(root.where(key), f"expected a list of {kind} names")
            items = merged.get(kind) if isinstance(merged.get(kind), list) else []  # others: parse_catalog reports
            known = {item.get("name") for item in items if isinstance(item, dict)}
            for name in names:
                if not isinstance(name, str) or name not in known:
                    raise InputError(root.where(key), f"no {kind[:-1]} named {name!r} to remove")
            merged[kind] = [item for item in items if not isinstance(item, dict) or item.get("name") not in names]
    if root.has("discounts"):
        merged["offerings"] = _discounted(root.section("discounts"), merged.get("offerings", []))
    return {k: v for k, v in merged.items() if k not in ("extends", "remove_offerings", "remove_tiers", "discounts")}


def _merge_by_name(base: list, overrides: list[Section]) -> list:
    merged = {str(item.get("name")): dict(item) for item in base if isinstance(item, dict)}
    for item in overrides:
        name = item.string("name")
        merged[name] = {**merged.get(name, {}), **item.data}
    return list(merged.values())


def _discounted(discounts: Section, offerings: list) -> list:
    discounts.warn_unknown(PRICINGS)
    fractions = {key: discounts.number(key) for key in PRICINGS if discounts.has(key)}
    for key, fraction in fractions.items():
        if fraction >= 1:
            raise InputError(discounts.where(key), f"expected a fraction below 1, found {fraction!r}")
    if not isinstance(offerings, list):
        return offerings  # parse_catalog names what is wrong with it
    result = []
    for offering in offerings:
        if not isinstance(offering, dict):
            result.append(offering)
            continue
        prices = offering.get("price_per_hour")
        if not isinstance(prices, dict):  # a bare number is the on-demand price; anything else is reported later
            if not isinstance(prices, (int, float)) or isinstance(prices, bool):
                result.append(offering)
                continue
            prices = {"on_demand": prices}
        prices = dict(prices)
        for key, fraction in fractions.items():
            value = prices.get(key)
            if isinstance(value, dict):
                value = value.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                prices[key] = round(value * (1 - fraction), 10)
        result.append({**offering, "price_per_hour": prices})
    return result


def load_catalog(ref: str, models: dict[str, ModelCard]) -> Catalog:
    """Load, extend and check a catalog; figures that look like a unit slip are warned about, not refused."""
    path = resolve_catalog_path(ref)
    catalog = parse_catalog(extend(load_yaml(path), str(path)), str(path), models)
    for message in unit_slips(catalog):
        warn(str(path), message)
    return Catalog(**{**catalog.__dict__, "sha256": file_sha256(path)})


def unit_slips(catalog: Catalog) -> list[str]:
    """Figures that are probably in a wrong unit: warned about whenever a catalog is loaded."""
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
