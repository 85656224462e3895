"""Break-even analysis (MODEL.md §2, generalised): from what reuse rate does storing a context's KV cache on a
tier cost less than recomputing its prefill every time, by context length.

For one context on one offering, every option's monthly cost is linear in the reuse rate f (reuses per month):
    cost_t(f) = A_t + B_t · f
with A_t what does not depend on reuse (storage, the writes' transfer, requests and cache-building prefill) and
B_t what each reuse costs (loading: retrieval, transfer and read requests; GPU time: the prompt's prefill after
the loaded cache, or the whole prefill when recomputing; decode). GPU time is priced per use, as the paper does:
the offering's hourly price per GPU for each GPU-second (MODEL.md §6). Storing on tier t beats recomputing for
    f > f*_t = (A_t − A_recompute) / (B_recompute − B_t)        (never where B_t >= B_recompute)
Attached tiers (HBM, host memory, local NVMe) come with the instance: no storage price, only their space.

With `delay`, each row also gives the end-to-end delay of one request (MODEL.md §4): TTFT (the load, then the
prompt's prefill after it, or overlapped where the tier says so; recomputing: the whole prefill) plus the output's
decode, output tokens × TPOT, as the paper's Figure 2 compares them; and each option's cost at the reuse rate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..costmodel import RECOMPUTE, Demand, Options, Settings, build_fleet, build_tiers, evaluate
from ..inputs.catalog import Catalog, ModelCard

ATTACHED = ("hbm", "host_memory", "local_nvme")  # tiers that come with the instance


@dataclasses.dataclass(frozen=True)
class Setting:
    """One context's shape besides its length, and the offering that serves it."""
    prompt_tokens: int = 100
    output_tokens: int = 50
    writes_per_month: float = 1.0
    ttft_slo_s: float = np.inf
    tpot_slo_s: float = np.inf
    hours_per_month: float = 730.0
    pricing: str = "on_demand"


def _options(card: ModelCard, catalog: Catalog, offering: int, tokens: np.ndarray, reuses: np.ndarray,
             setting: Setting) -> tuple[Options, np.ndarray]:
    """Every tier's option for each (tokens[i], reuses[i]) on the offering, and its monthly cost (GPU time per
    use). Rows are i * T + t."""
    fleet, tiers = build_fleet(card, catalog, setting.pricing), build_tiers(catalog)
    n, T = len(tokens), len(tiers.names)
    demand = Demand(tokens=np.asarray(tokens, np.int64), prompt_tokens=np.full(n, setting.prompt_tokens, np.int64),
                    output_tokens=np.full(n, setting.output_tokens, np.int64),
                    reuses_per_month=np.asarray(reuses, float), writes_per_month=np.full(n, setting.writes_per_month),
                    ttft_slo_s=np.full(n, setting.ttft_slo_s), tpot_slo_s=np.full(n, setting.tpot_slo_s),
                    count=np.ones(n, np.int64))
    # Provisioned, so that attached tiers exist; at peak = mean, the GPU load times the month is GPU-seconds.
    settings = Settings("provisioned", setting.hours_per_month, 1.0, hbm_cache_possible="hbm" in tiers.kinds)
    k, t = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    g = np.full(len(k), offering)
    c = (np.asarray(tiers.kinds, dtype=object)[t] == "hbm").astype(np.int64)
    o = evaluate(card, fleet, tiers, demand, settings, k, g, t, c)
    per_gpu_second = fleet.price[offering] / fleet.gpus[offering] / 3600.0
    cost = o.direct_usd + o.gpu_load * setting.hours_per_month * 3600.0 * per_gpu_second
    return o, np.where(o.available, cost, np.nan)


def default_offering(card: ModelCard, catalog: Catalog, setting: Setting = Setting(), tokens: int = 10_000) -> int:
    """The offering on which recomputing a context of `tokens` costs least per use (-1: none serves the model)."""
    serving = np.flatnonzero(build_fleet(card, catalog, setting.pricing).serves)
    if len(serving) == 0:
        return -1
    costs = [_options(card, catalog, g, np.array([tokens]), np.array([1.0]), setting)[1][RECOMPUTE]
             for g in serving]
    return int(serving[int(np.nanargmin(costs))])


def breakeven_table(card: ModelCard, catalog: Catalog, tokens: np.ndarray, offering: int, setting: Setting = Setting(),
          reuses_per_hour: float = 1.0, delay: bool = False) -> pd.DataFrame:
    """Per context length and stored tier: the break-even reuse rate (per hour and per month; inf: never), the
    TTFT stored and recomputed, and the recompute-to-store cost ratio at `reuses_per_hour`. With `delay`: the
    load, decode and end-to-end delay of one request stored and recomputed, their ratio, and one context's cost
    over the period (`hours_per_month`) at `reuses_per_hour`, stored and recomputed."""
    H = setting.hours_per_month
    tokens = np.asarray(tokens, np.int64)
    tiers = build_tiers(catalog)
    T = len(tiers.names)
    f = reuses_per_hour * H
    _, cost1 = _options(card, catalog, offering, tokens, np.full(len(tokens), f), setting)
    o, cost2 = _options(card, catalog, offering, tokens, np.full(len(tokens), 2 * f), setting)
    slope = ((cost2 - cost1) / f).reshape(-1, T)                       # B_t: USD per reuse
    fixed = (cost1.reshape(-1, T) - slope * f)                         # A_t: USD per month
    ttft, ok = o.ttft_s.reshape(-1, T), o.meets_slo.reshape(-1, T)
    # End-to-end delay of one request: TTFT, then one decode step (TPOT) per output token.
    decode = setting.output_tokens * o.tpot_s.reshape(-1, T)
    load = o.load_s.reshape(-1, T)
    cost_at = cost1.reshape(-1, T)
    rows = []
    for i, L in enumerate(tokens):
        for t in range(1, T):
            if np.isnan(slope[i, t]):
                continue  # not available on this offering (no path, or the cache does not fit)
            saving = slope[i, RECOMPUTE] - slope[i, t]
            extra = fixed[i, t] - fixed[i, RECOMPUTE]
            month = max(extra, 0.0) / saving if saving > 0 else np.inf
            rows.append({"tokens": int(L), "tier": tiers.names[t], "kind": tiers.kinds[t],
                         "breakeven_per_hour": month / H, "breakeven_per_month": month,
                         "ttft_stored_s": float(ttft[i, t]), "ttft_recompute_s": float(ttft[i, RECOMPUTE]),
                         "within_slo": bool(ok[i, t]),
                         "usd_per_reuse_stored": float(slope[i, t]),
                         "usd_per_reuse_recompute": float(slope[i, RECOMPUTE]),
                         "usd_fixed_per_month": float(fixed[i, t]),
                         "cost_ratio": float(cost_at[i, RECOMPUTE] / cost_at[i, t])})
            if delay:
                stored_s, recompute_s = ttft[i, t] + decode[i, t], ttft[i, RECOMPUTE] + decode[i, RECOMPUTE]
                rows[-1].update({"load_s": float(load[i, t]),
                                 "decode_stored_s": float(decode[i, t]),
                                 "decode_recompute_s": float(decode[i, RECOMPUTE]),
                                 "delay_stored_s": float(stored_s), "delay_recompute_s": float(recompute_s),
                                 "delay_ratio": float(recompute_s / stored_s),
                                 "usd_per_month_stored": float(cost_at[i, t]),
                                 "usd_per_month_recompute": float(cost_at[i, RECOMPUTE])})
    return pd.DataFrame(rows)


def cheapest_map(card: ModelCard, catalog: Catalog, offering: int, tokens: np.ndarray, reuses_per_month: np.ndarray,
                 setting: Setting = Setting(), without: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str]]:
    """For a grid of lengths (rows) × reuse rates (columns): the tier of the cheapest option within SLO
    (index into the returned tier names; -1 where none meets the SLO), tiers of the kinds `without` left out."""
    tiers = build_tiers(catalog)
    T = len(tiers.names)
    L, F = np.meshgrid(np.asarray(tokens, np.int64), np.asarray(reuses_per_month, float), indexing="ij")
    o, cost = _options(card, catalog, offering, L.ravel(), F.ravel(), setting)
    kept = ~np.isin(np.asarray(tiers.kinds, dtype=object), without)[o.t]
    cost = np.where(o.meets_slo & kept, cost, np.nan).reshape(-1, T)
    best = np.full(len(cost), -1)
    some = ~np.all(np.isnan(cost), axis=1)
    best[some] = np.nanargmin(cost[some], axis=1)
    return best.reshape(L.shape), list(tiers.names)


def parse_range(text: str) -> np.ndarray:
    """'1000..100000' (log-spaced, 1-2-5 steps), '1000..100000:7' (7 log-spaced), or '1000,5000,10000'."""
    text = text.replace("_", "")
    if ".." in text:
        low_text, _, high_text = text.partition("..")
        high_text, _, steps = high_text.partition(":")
        low, high = int(float(low_text)), int(float(high_text))
        if not 0 < low <= high:
            raise ValueError(f"range {text!r}: need 0 < low <= high")
        if steps:
            return np.unique(np.round(np.geomspace(low, high, int(steps))).astype(np.int64))
        decades = 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
        values = np.unique(np.concatenate([decades * m for m in (1, 2, 5)]))
        values = values[(values >= low) & (values <= high)]
        return np.unique(np.concatenate([[low], values, [high]]).astype(np.int64))
    values = [int(float(v)) for v in text.split(",") if v.strip()]
    if not values or min(values) <= 0:
        raise ValueError(f"token list {text!r}: need positive integers")
    return np.array(sorted(set(values)), np.int64)
