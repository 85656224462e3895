"""A plan's decisions (Placement), priced with the analytical model alone and checked against every constraint
(MODEL.md §5, §6): the plan's numbers are these, not the solver's objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..costmodel import PATH_BLOCK, PATH_NETWORK, Options
from ..solve.exact import Problem, Solution
from ..solve.highs import SOLVER_TOLERANCE, shares
from .options import Model

TOLERANCE = 1e-6  # relative slack when checking a plan's capacities


@dataclass(frozen=True)
class Placement:
    """A plan's decisions, per context and per offering: everything pricing needs."""
    offering: np.ndarray        # per context
    tier: np.ndarray            # per context
    instances: np.ndarray       # per offering
    hbm_cache: np.ndarray       # per offering (0/1)
    background_share: np.ndarray  # per offering
    nodes: np.ndarray           # per tier


def placement_from(model: Model, problem: Problem, solution: Solution) -> Placement:
    """Hand each class's counts out to its contexts, in input order (deterministic)."""
    o = problem.options
    by_class = np.lexsort((np.arange(len(o.k)), o.k))
    chosen = np.repeat(by_class, solution.z[by_class])
    order = np.argsort(model.context_class, kind="stable")
    offering = np.empty(len(order), np.int64)
    tier = np.empty(len(order), np.int64)
    offering[order], tier[order] = o.g[chosen], o.t[chosen]
    share = np.zeros(len(model.fleet.names))
    np.add.at(share, problem.background.g, solution.x)
    return settled(model, Placement(offering, tier, solution.n, solution.h, share, solution.m))


def settled(model: Model, placement: Placement) -> Placement:
    """A solver's placement without its round-off: background shares within the solver's tolerance are zero
    (the rest add up to 1), and an offering with no instance keeps no HBM cache."""
    hbm_cache = placement.hbm_cache
    if model.workload.mode == "provisioned":
        hbm_cache = np.where(placement.instances > 0, hbm_cache, 0)
    return dataclasses.replace(placement, background_share=shares(placement.background_share), hbm_cache=hbm_cache)


def carrying_background(share: np.ndarray) -> np.ndarray:
    """The offerings a plan's background shares put traffic on (shares within the solver's tolerance are none)."""
    return np.flatnonzero(share > SOLVER_TOLERANCE)


@dataclass(frozen=True)
class Priced:
    options: Options            # per context: its chosen option, priced
    background: Options         # per offering carrying background traffic
    background_share: np.ndarray
    fleet_usd: np.ndarray       # per offering
    node_usd: np.ndarray        # per tier
    context_usd: np.ndarray     # per context: its direct costs plus its share of its offering's compute
    background_usd: float
    breakdown: dict[str, float]
    violations: list[str]

    @property
    def total(self) -> float:
        return float(sum(self.breakdown.values()))


def price(model: Model, placement: Placement) -> Priced:
    """Price a placement with the analytical model alone, and check it against every constraint."""
    F, T, H = model.fleet, model.tiers, model.workload.hours_per_month
    provisioned = model.workload.mode == "provisioned"
    g, t = placement.offering, placement.tier
    c = placement.hbm_cache[g] if len(g) else g
    o = model.options(model.context_class, g, t, c)
    bg_g = carrying_background(placement.background_share)
    bg = model.background_options(bg_g, placement.hbm_cache[bg_g])
    share = placement.background_share[bg_g]
    n = placement.instances

    if provisioned:
        fleet_usd = n * np.nan_to_num(F.price) * H
    else:
        fleet_usd = np.bincount(g, o.compute_usd, len(F.names)) + np.bincount(bg_g, share * bg.compute_usd,
                                                                              len(F.names))
    node_usd = placement.nodes * np.nan_to_num(T.node_price_per_hour) * H
    breakdown = {"compute": float(fleet_usd.sum()),
                 "storage": float(o.storage_usd.sum() + node_usd.sum()),
                 "network": float(o.network_usd.sum()),
                 "requests": float(o.requests_usd.sum())}

    # Compute is shared out over each offering's contexts and background by their peak GPU load.
    if provisioned:
        load = np.bincount(g, o.gpu_load, len(F.names)) + np.bincount(bg_g, share * bg.gpu_load, len(F.names))
        members = np.bincount(g, minlength=len(F.names)) + np.bincount(bg_g, minlength=len(F.names))
        with np.errstate(divide="ignore", invalid="ignore"):
            per_load = np.where(load > 0, fleet_usd / load, 0.0)
            per_member = np.where((load == 0) & (members > 0), fleet_usd / np.maximum(members, 1), 0.0)
        context_compute = o.gpu_load * per_load[g] + per_member[g]
        background_usd = float(np.sum(share * bg.gpu_load * per_load[bg_g] + per_member[bg_g]))
    else:
        context_compute = o.compute_usd
        background_usd = float(np.sum(share * bg.compute_usd))
    context_usd = o.storage_usd + o.network_usd + o.requests_usd + context_compute
    # Node costs of node-priced tiers are shared by stored GB.
    for tier in np.flatnonzero(node_usd > 0):
        on = t == tier
        context_usd[on] += node_usd[tier] * o.stored_gb[on] / max(o.stored_gb[on].sum(), 1e-300)

    return Priced(o, bg, share, fleet_usd, node_usd, context_usd, background_usd, breakdown,
                  _violations(model, placement, o, bg, share))


def _violations(model: Model, placement: Placement, o: Options, bg: Options, share: np.ndarray) -> list[str]:
    F, T = model.fleet, model.tiers
    ids = model.workload.contexts["id"].to_numpy()
    found = []
    for i in np.flatnonzero(~o.available)[:5]:
        found.append(f"context {ids[i]}: {T.names[o.t[i]]} on {F.names[o.g[i]]} is not possible")
    for i in np.flatnonzero(o.available & ~o.meets_slo)[:5]:
        found.append(f"context {ids[i]}: TTFT {o.ttft_s[i]:.3f} s or TPOT misses its SLO")
    if len(model.background.count):
        if abs(placement.background_share.sum() - 1) > SOLVER_TOLERANCE:
            found.append(f"background shares add up to {placement.background_share.sum():.6f}, not 1")
        if not bg.allowed.all():
            found.append("background traffic is placed where it misses its SLO")
    if model.workload.mode != "provisioned":
        return found
    n = placement.instances
    G = len(F.names)
    bg_g = carrying_background(placement.background_share)
    used = np.bincount(o.g, minlength=G) + np.bincount(bg_g, minlength=G)
    for gi in np.flatnonzero((used > 0) & (n < 1)):
        found.append(f"{F.names[gi]} serves traffic with no instance")
    per_offering = np.bincount(F.offering, n, minlength=int(F.offering.max(initial=-1)) + 1)
    caps = np.full(len(per_offering), np.inf)
    caps[F.offering] = F.max_instances  # an offering's cap caps the sum of its pools (its tp versions)
    for i in np.flatnonzero(per_offering > caps):
        g = int(np.flatnonzero(F.offering == i)[0])
        found.append(f"{F.offering_names[g]}: {int(per_offering[i])} instances exceed max_instances "
                     f"{F.max_instances[g]:g}")
    kinds = np.asarray(T.kinds, dtype=object)[o.t]
    paths = T.path[o.t]
    checks = (("GPU load", o.gpu_load, np.ones(len(o.k), bool), F.gpu_capacity),
              ("HBM cache GB", o.stored_gb, kinds == "hbm", F.hbm_cache_gb),
              ("host-memory cache GB", o.stored_gb, kinds == "host_memory", F.host_cache_gb),
              ("NVMe cache GB", o.stored_gb, kinds == "local_nvme", F.nvme_cache_gb),
              ("network GB/s", o.path_gbs, paths == PATH_NETWORK, F.network_cap_gbs),
              ("block-storage GB/s", o.path_gbs, paths == PATH_BLOCK, F.block_cap_gbs))
    for label, use, selected, capacity in checks:
        total = np.bincount(o.g[selected], use[selected], G).astype(float)
        if label == "GPU load":
            total += np.bincount(bg_g, share * bg.gpu_load, G)
        limit = np.nan_to_num(capacity) * n
        for gi in np.flatnonzero(total > limit * (1 + TOLERANCE) + 1e-12):
            found.append(f"{F.names[gi]}: {label} {total[gi]:.6g} exceeds capacity {limit[gi]:.6g}")
    node_gb = np.bincount(o.t, o.stored_gb, len(T.names))
    for ti in np.flatnonzero(np.isfinite(T.node_gb)):
        if node_gb[ti] > placement.nodes[ti] * T.node_gb[ti] * (1 + TOLERANCE):
            found.append(f"{T.names[ti]}: {node_gb[ti]:.6g} GB exceed {placement.nodes[ti]} nodes")
    return found
