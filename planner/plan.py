"""From a workload and a catalog to a priced plan (MODEL.md §5, §6, §8), and back: re-pricing a saved plan.

A plan is computed in three steps: the option table (costmodel.evaluate on every class × offering × tier ×
HBM-cache state, kept where allowed and not dominated), the integer program (formulation), and pricing: the
chosen option of every context is priced again by costmodel.evaluate, and those numbers, not the solver's
objective, are the plan's. `reprice` runs the same pricing on a saved plan without any solver.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import __version__
from .catalog import Catalog, ModelCard
from .costmodel import (PATH_BLOCK, PATH_NETWORK, RECOMPUTE, Demand, Fleet, Options, Settings, Tiers,
                        build_fleet, build_tiers, evaluate, grid)
from .errors import Infeasible, InputError
from .formulation import SOLVER_TOLERANCE, Problem, Solution, shares, solve
from .workload import Workload, background_demand, demand_classes

TOLERANCE = 1e-6  # relative slack when checking a plan's capacities


@dataclass(frozen=True)
class Model:
    """The model's inputs as arrays: one workload on one catalog."""
    workload: Workload
    catalog: Catalog
    card: ModelCard
    fleet: Fleet
    tiers: Tiers
    settings: Settings
    demand: Demand
    context_class: np.ndarray   # class index of each context
    background: Demand

    def options(self, k, g, t, c) -> Options:
        return evaluate(self.card, self.fleet, self.tiers, self.demand, self.settings, k, g, t, c)

    def background_options(self, g, c) -> Options:
        g = np.asarray(g)
        zeros = np.zeros(len(g), dtype=np.int64)
        return evaluate(self.card, self.fleet, self.tiers, self.background, self.settings, zeros, g, zeros, c)


def prepare(workload: Workload, catalog: Catalog) -> Model:
    (demand,), context_class = demand_classes(workload)
    tiers = build_tiers(catalog)
    settings = Settings(workload.mode, workload.hours_per_month, workload.peak_to_mean,
                        hbm_cache_possible=workload.mode == "provisioned" and "hbm" in tiers.kinds)
    return Model(workload, catalog, workload.model, build_fleet(workload.model, catalog, workload.pricing), tiers,
                 settings, demand, context_class, background_demand(workload))


def option_table(model: Model) -> Options:
    """Every option of every class, with its availability and SLO verdict."""
    table = model.options(*grid(len(model.demand.count), len(model.fleet.names), len(model.tiers.names)))
    return merge_cache_states(table, model.tiers)


def merge_cache_states(table: Options, tiers: Tiers) -> Options:
    """An option whose decode batch is the same with and without an HBM cache on its offering costs the same in
    both states: keep one copy, marked c = -1, that either state may use. The grid lists c = 0, 1 in pairs."""
    plain, cached = np.arange(0, len(table.k), 2), np.arange(1, len(table.k), 2)
    same = ((table.batch[plain] == table.batch[cached]) & table.available[plain] & table.available[cached]
            & (table.meets_slo[plain] == table.meets_slo[cached])
            & (np.asarray(tiers.kinds, dtype=object)[table.t[plain]] != "hbm"))
    c = table.c.copy()
    c[plain[same]] = -1
    keep = np.ones(len(table.k), dtype=bool)
    keep[cached[same]] = False
    return dataclasses.replace(table, c=c).take(keep)


def background_table(model: Model) -> Options:
    if len(model.background.count) == 0:
        return model.background_options(np.zeros(0, np.int64), np.zeros(0, np.int64))
    g, c = np.meshgrid(np.arange(len(model.fleet.names)), np.arange(2), indexing="ij")
    return model.background_options(g.ravel(), c.ravel())


def drop_dominated(options: Options, tiers: Tiers) -> Options:
    """Among remote tiers reached over the same path, one class on one offering in one HBM state only ever
    wants the cheapest: they load the same bytes over the same path and cost the same GPU time."""
    keep = np.ones(len(options.k), dtype=bool)
    path = tiers.path[options.t]
    per_gb = ~np.isfinite(tiers.node_gb[options.t])  # node-priced tiers use their own capacity: keep them
    for kind in (PATH_NETWORK, PATH_BLOCK):
        rows = np.flatnonzero((path == kind) & per_gb)
        if len(rows) == 0:
            continue
        key = np.stack([options.k[rows], options.g[rows], options.c[rows]])
        order = np.lexsort((rows, options.direct_usd[rows], key[2], key[1], key[0]))
        sorted_key = key[:, order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = np.any(sorted_key[:, 1:] != sorted_key[:, :-1], axis=0)
        keep[rows[order[~first]]] = False
    return options.take(keep)


# --- solving -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """A plan's decisions, per context and per offering: everything pricing needs."""
    offering: np.ndarray        # per context
    tier: np.ndarray            # per context
    instances: np.ndarray       # per offering
    hbm_cache: np.ndarray       # per offering (0/1)
    background_share: np.ndarray  # per offering
    nodes: np.ndarray           # per tier


def diagnose_unplaceable(model: Model, table: Options, classes: np.ndarray, limit: int = 10) -> str:
    """Which contexts no option serves within SLO, with the best TTFT each could get and where."""
    lines = []
    contexts = model.workload.contexts
    for k in classes[:limit]:
        ids = contexts["id"].to_numpy()[model.context_class == k]
        rows = np.flatnonzero((table.k == k) & table.available)
        label = f"{ids[0]}" + (f" (and {len(ids) - 1} identical)" if len(ids) > 1 else "")
        if len(rows) == 0:
            lines.append(f"  {label}: no offering can serve it at all ({_why_unavailable(model, k)})")
            continue
        best = rows[np.argmin(table.ttft_s[rows])]
        slo = model.demand.ttft_slo_s[k]
        tpot = f", TPOT {table.tpot_s[best] * 1e3:.1f} ms" if np.isfinite(model.demand.tpot_slo_s[k]) else ""
        lines.append(f"  {label}: best TTFT {table.ttft_s[best]:.3f} s{tpot} with "
                     f"{model.tiers.names[table.t[best]]} on {model.fleet.names[table.g[best]]}, "
                     f"SLO {slo:g} s (smallest change: a TTFT SLO of {math.ceil(table.ttft_s[best] * 1000) / 1000:g} s"
                     f"{_tpot_change(model, table, rows, k)})")
    more = f"\n  ... and {len(classes) - limit} more" if len(classes) > limit else ""
    return "\n".join(lines) + more


def _tpot_change(model: Model, table: Options, rows: np.ndarray, k: int) -> str:
    """Where the TPOT SLO binds too, the TPOT the fastest-TTFT-feasible option would need."""
    if not np.isfinite(model.demand.tpot_slo_s[k]):
        return ""
    meets_ttft = rows[table.ttft_s[rows] <= model.demand.ttft_slo_s[k] * (1 + 1e-12)]
    if len(meets_ttft) == 0:
        return ", and a TPOT SLO to match"
    best = meets_ttft[np.argmin(table.tpot_s[meets_ttft])]
    return f", or a TPOT SLO of {math.ceil(table.tpot_s[best] * 1e4) / 1e4:g} s"


def _why_unavailable(model: Model, k: int) -> str:
    F = model.fleet
    if not F.serves.any():
        reasons = sorted({F.why_not(g, model.workload.pricing) for g in range(len(F.names))})
        return "no offering can serve the model: " + "; ".join(reasons)
    return "its KV cache leaves no room for a decode batch on any GPU"


def _problem(model: Model, options: Options, background: Options) -> Problem:
    return Problem(options, model.demand.count, background, model.fleet, model.tiers,
                   model.workload.hours_per_month, model.workload.mode == "provisioned")


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


def solve_restricted(model: Model, table: Options, background: Options, keep: np.ndarray, *, solver: str,
                     gap: float, time_limit: float | None) -> tuple[Placement | None, Solution | None, str]:
    """Cheapest plan using only the options in `keep`; (None, None, why) when no plan exists."""
    options = drop_dominated(table.take(keep & table.allowed), model.tiers)
    missing = np.setdiff1d(np.arange(len(model.demand.count)), options.k)
    if len(missing):
        return None, None, f"{model.demand.count[missing].sum()} contexts meet no SLO this way"
    if len(model.background.count) and not background.allowed.any():
        return None, None, "background traffic cannot meet the SLO on any offering"
    problem = _problem(model, options, background.take(background.allowed))
    solution = solve(problem, solver=solver, gap=gap, time_limit=time_limit)
    if not solution.has_plan:
        return None, solution, f"solver: {solution.status}"
    return placement_from(model, problem, solution), solution, ""


def baseline_masks(model: Model, table: Options) -> dict[str, np.ndarray]:
    """MODEL.md §8's baselines, each a restriction of the option table."""
    stored = table.t != RECOMPUTE
    masks = {"all_recompute": ~stored & (table.c != 1)}
    for t, name in enumerate(model.tiers.names[1:], start=1):
        masks[name] = table.t == t
    # Rule of thumb: store a context reused more than once per hour, recompute the others; where the rule's
    # choice has no option within SLO, the context takes the other one.
    wants_store = model.demand.reuses_per_month > model.workload.hours_per_month
    rule = stored == wants_store[table.k]
    served = np.zeros(len(model.demand.count), dtype=bool)
    served[table.k[rule & table.allowed]] = True
    masks["rule_of_thumb"] = rule | ~served[table.k]
    return masks


# --- pricing -----------------------------------------------------------------------------------------------

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
    for gi in np.flatnonzero(n > F.max_instances):
        found.append(f"{F.names[gi]}: {n[gi]} instances exceed max_instances {F.max_instances[gi]:g}")
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


# --- the plan ----------------------------------------------------------------------------------------------

def silent(message: str) -> None:
    """A progress callback that says nothing."""


METHODS = ("auto", "exact", "scale")
SCALE_CLASSES = 2000  # method auto: above this many context classes, the scale engine (planner/scale.py)


def make_plan(workload: Workload, catalog: Catalog, *, solver: str = "highs", gap: float = 1e-4,
              time_limit: float | None = None, baselines: bool | tuple[str, ...] = True,
              progress: Callable[[str], None] = silent, timing: bool = False, budget: float | None = None,
              method: str = "auto") -> dict:
    """Plan a workload on a catalog: the cheapest placement and fleet within SLO, priced, with baselines
    (all of them, none, or those named). `method`: exact (one program over every class and option), scale
    (planner/scale.py: per-context plans for many contexts, with a proven bound), or auto (scale above
    SCALE_CLASSES classes). Identical inputs give identical plans; the solver's wall time, which does not
    repeat, is recorded only with `timing`."""
    model = prepare(workload, catalog)
    if not model.fleet.serves.any():
        reasons = sorted({model.fleet.why_not(g, workload.pricing) for g in range(len(model.fleet.names))})
        raise Infeasible(f"no offering of {catalog.name} can serve {model.card.name}: {'; '.join(reasons)}")
    if method == "scale" or (method == "auto" and len(model.demand.count) > SCALE_CLASSES):
        restricted, names = _scale_solver(model, gap, time_limit, progress), baseline_names(model)
    else:
        restricted, names = _exact_solver(model, solver, gap, time_limit, progress)
    placement, solution, reason = restricted(None)
    if placement is None:
        raise Infeasible(reason)
    priced = price(model, placement)
    progress(f"plan: ${priced.total:,.2f} per month ({solution.status}, {solution.seconds:.1f} s)")
    if budget is not None and priced.total > budget:
        raise Infeasible(_over_budget(model, priced, budget, solution))
    notes: list[str] = []
    baseline_rows: dict[str, dict] = {}
    if baselines:
        for name in names:
            if baselines is not True and name not in baselines:
                continue
            base_placement, base_solution, reason = restricted(name)
            if base_placement is None:
                baseline_rows[name] = {"total_usd": None, "feasible": False, "reason": reason}
                progress(f"baseline {name}: infeasible ({reason})")
                continue
            base_priced = price(model, base_placement)
            progress(f"baseline {name}: ${base_priced.total:,.2f}")
            baseline_rows[name] = {"total_usd": base_priced.total, "feasible": True,
                                   "status": base_solution.status}
            if base_priced.total < priced.total - 1e-9 and not base_priced.violations:
                notes.append(f"the {name} baseline's plan was cheaper than the solver's (within its gap): "
                             "it is used as the plan")
                placement, priced = base_placement, base_priced
        for row in baseline_rows.values():
            if row["feasible"]:
                row["savings_usd"] = row["total_usd"] - priced.total
                row["savings_ratio"] = row["total_usd"] / priced.total if priced.total > 0 else None
    return to_json(model, placement, priced, solution, baseline_rows, notes, timing)


def baseline_names(model: Model) -> list[str]:
    return ["all_recompute", *model.tiers.names[1:], "rule_of_thumb"]


def _exact_solver(model: Model, solver: str, gap: float, time_limit: float | None,
                  progress: Callable[[str], None]):
    """The exact program: (solve(restriction name or None), baseline names)."""
    table = option_table(model)
    background = background_table(model)
    progress(f"{len(model.demand.count)} context classes, {int(table.allowed.sum())} options within SLO")
    unplaceable = np.setdiff1d(np.arange(len(model.demand.count)), table.k[table.allowed])
    if len(unplaceable):
        n = int(model.demand.count[unplaceable].sum())
        raise Infeasible(f"{n} context(s) cannot meet their SLO with any option:\n"
                         + diagnose_unplaceable(model, table, unplaceable))
    _check_background(model, background)
    masks = baseline_masks(model, table)

    def restricted(name: str | None):
        keep = np.ones(len(table.k), dtype=bool) if name is None else masks[name]
        placement, solution, reason = solve_restricted(model, table, background, keep, solver=solver, gap=gap,
                                                       time_limit=time_limit)
        if placement is None and name is None:
            reason = _explain_failure(model, table, background, solution, solver, gap, time_limit)
        return placement, solution, reason
    return restricted, list(masks)


def _check_background(model: Model, background: Options) -> None:
    if len(model.background.count) and not background.allowed.any():
        best = np.argmin(np.where(background.available, background.ttft_s, np.inf))
        raise Infeasible("background traffic cannot meet the SLO on any offering: best TTFT "
                         f"{background.ttft_s[best]:.3f} s on {model.fleet.names[background.g[best]]}, "
                         f"SLO {model.workload.ttft_slo_s:g} s")


def _scale_solver(model: Model, gap: float, time_limit: float | None, progress: Callable[[str], None]):
    """The scale engine (planner/scale.py); baselines are the same restrictions, per class and tier."""
    from . import scale

    inputs = scale.Inputs(model.card, model.fleet, model.tiers, model.settings)
    K, T = len(model.demand.count), len(model.tiers.names)
    stored = np.arange(T) != RECOMPUTE

    def restricted(name: str | None):
        states, allowed = (0, 1), None
        if name == "all_recompute":
            states, allowed = (0,), np.broadcast_to(~stored, (K, T)).copy()
        elif name == "rule_of_thumb":
            wants_store = model.demand.reuses_per_month > model.workload.hours_per_month
            allowed = stored[None, :] == wants_store[:, None]
        elif name is not None:
            allowed = np.broadcast_to(np.arange(T) == model.tiers.index(name), (K, T)).copy()
        result = scale.solve(inputs, model.demand, model.background, states=states, allowed=allowed, gap=gap,
                             time_limit=time_limit, tree=name is None,  # a baseline's bound is not shown
                             progress=progress if name is None else silent)
        if result.status == "unplaceable" and name == "rule_of_thumb" and len(result.unplaceable):
            allowed[result.unplaceable] = True  # where the rule's choice meets no SLO, the other one
            result = scale.solve(inputs, model.demand, model.background, allowed=allowed, gap=gap,
                                 time_limit=time_limit)
        if result.status == "unplaceable":
            if name is not None:
                return None, None, f"{model.demand.count[result.unplaceable].sum()} contexts meet no SLO this way"
            _check_background(model, background_table(model))
            classes = result.unplaceable
            table = _class_table(model, classes)
            raise Infeasible(f"{int(model.demand.count[classes].sum())} context(s) cannot meet their SLO with any "
                             f"option:\n" + diagnose_unplaceable(model, table, classes))
        if result.objective is None:
            return None, None, result.reason
        rows = np.repeat(np.arange(len(result.classes)), result.contexts)
        rows = rows[np.lexsort((rows, result.classes[rows]))]          # by class, in row order
        order = np.argsort(model.context_class, kind="stable")
        offering, tier = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
        offering[order], tier[order] = result.offering[rows], result.tier[rows]
        placement = settled(model, Placement(offering, tier, result.instances, result.hbm_cache,
                                             result.background_share, result.nodes))
        bound = min(result.bound, result.objective)
        gap_value = max(0.0, (result.objective - bound) / max(abs(result.objective), 1e-12))
        status = "optimal" if gap_value <= gap else "feasible"
        empty = np.zeros(0)
        solution = Solution(status, result.objective, bound, gap_value, result.seconds, "highs (scale engine)",
                            empty, empty, result.instances, result.hbm_cache, result.nodes)
        return placement, solution, ""
    return restricted


def _class_table(model: Model, classes: np.ndarray) -> Options:
    """Every option of the given classes (for diagnosing them)."""
    k, g, t, c = grid(len(classes), len(model.fleet.names), len(model.tiers.names))
    return model.options(classes[k], g, t, c)


def _over_budget(model: Model, priced: Priced, budget: float, solution: Solution) -> str:
    """The cheapest plan is above the budget: by how much, and where its money goes."""
    bound = solution.lower_bound if solution.lower_bound is not None else priced.total
    parts = sorted(((usd, name) for name, usd in zip(model.fleet.names, priced.fleet_usd) if usd > 0), reverse=True)
    biggest = ", ".join(f"{name} ${usd:,.2f}" for usd, name in parts[:3])
    return (f"over budget: the cheapest plan costs ${priced.total:,.2f} per month (no plan costs less than "
            f"${bound:,.2f}), ${priced.total - budget:,.2f} above the budget of ${budget:,.2f}; smallest change: "
            f"a budget of ${math.ceil(bound * 100) / 100:,.2f}, or looser SLOs or fewer reuses. "
            f"Largest costs: {biggest}")


def _explain_failure(model: Model, table: Options, background: Options, solution: Solution | None, solver: str,
                     gap: float, time_limit: float | None) -> str:
    if solution is not None and solution.status == "not_solved":
        limit = "" if time_limit is None else f" within the time limit ({time_limit:g} s); raise --time-limit"
        return f"the solver stopped without finding a plan{limit}"
    capped = np.isfinite(model.fleet.max_instances)
    if model.workload.mode == "provisioned" and capped.any():
        uncapped = dataclasses.replace(model, fleet=dataclasses.replace(
            model.fleet, max_instances=np.full(len(model.fleet.names), np.inf)))
        placement, _, _ = solve_restricted(uncapped, table, background, np.ones(len(table.k), bool),
                                           solver=solver, gap=gap, time_limit=time_limit)
        if placement is not None:
            over = [f"{model.fleet.names[g]} needs {placement.instances[g]} (max_instances "
                    f"{model.fleet.max_instances[g]:g})" for g in np.flatnonzero(
                        placement.instances > model.fleet.max_instances)]
            return "no fleet within max_instances serves the load; the cheapest uncapped plan: " + "; ".join(over)
    return "no plan satisfies every capacity row (GPU, cache and path capacities)"


def _rounded(value: float, digits: int = 6) -> float:
    return float(round(float(value), digits))


def to_json(model: Model, placement: Placement, priced: Priced, solution: Solution, baselines: dict,
            notes: list[str], timing: bool = False) -> dict:
    F, T, w = model.fleet, model.tiers, model.workload
    o = priced.options
    provisioned = w.mode == "provisioned"
    G = len(F.names)
    bg_g = carrying_background(placement.background_share)
    bg_on = np.zeros(G)
    bg_on[bg_g] = 1
    carrying = np.bincount(o.g, minlength=G) + bg_on
    load = np.bincount(o.g, o.gpu_load, G) + np.bincount(bg_g, priced.background_share * priced.background.gpu_load, G)
    fleet = []
    for g in range(G):
        if placement.instances[g] == 0 and carrying[g] == 0:
            continue  # neither rented nor used (a used offering with no instance is a violation, shown)
        row = {"offering": F.names[g], "instances": int(placement.instances[g]), "usd": _rounded(priced.fleet_usd[g]),
               "price_per_hour": float(F.price[g]), "gpus": int(F.gpus[g]), "tp": int(F.tp[g]),
               "hbm_cache": bool(placement.hbm_cache[g]), "contexts": int(np.sum(o.g == g)),
               "background_share": _rounded(placement.background_share[g])}
        if provisioned:
            capacity = F.gpu_capacity[g] * placement.instances[g] / F.utilization_max[g]
            row["gpu_utilization_peak"] = _rounded(load[g] / capacity if capacity else 0.0, 4)
        fleet.append(row)
    tiers = []
    for t, name in enumerate(T.names):
        on = o.t == t
        if not on.any() and priced.node_usd[t] == 0:
            continue
        usd = o.storage_usd[on].sum() + o.network_usd[on].sum() + o.requests_usd[on].sum() + priced.node_usd[t]
        row = {"tier": name, "kind": T.kinds[t], "contexts": int(on.sum()), "gb": _rounded(o.stored_gb[on].sum()),
               "usd": _rounded(usd)}
        if np.isfinite(T.node_gb[t]):
            row["nodes"] = int(placement.nodes[t])
        tiers.append(row)
    contexts = _context_rows(model, priced)
    total = priced.total
    estimated = _estimates_used(model, placement, o)
    if estimated:
        notes.append("uses estimated catalog figures: " + ", ".join(estimated))
    notes.append("TTFT excludes queueing (held down by utilization_max); loading "
                 + ("overlaps prefill on tiers marked overlap_load" if T.overlap_load.any()
                    else "and prefill run one after the other"))
    if model.card.params_b != model.card.total_params_b:
        notes.append("decode reads only the active experts' weights: a lower bound when a batch touches more")
    return {
        "kvplan_version": __version__,
        "model": model.card.name,
        "mode": w.mode,
        "pricing": w.pricing,
        "hours_per_month": w.hours_per_month,
        "catalog": {"name": model.catalog.name, "provider": model.catalog.provider, "region": model.catalog.region,
                    "as_of": model.catalog.as_of, "currency": model.catalog.currency},
        "total_usd": _rounded(total),
        "breakdown_usd": {key: _rounded(value) for key, value in priced.breakdown.items()},
        "fleet": fleet,
        "tiers": tiers,
        "background": {"requests_per_month": float(w.traffic.requests_per_month) if w.traffic else 0.0,
                       "usd": _rounded(priced.background_usd)},
        "contexts": contexts,
        "baselines": baselines,
        "solver": {"name": solution.solver, "status": solution.status,
                   "objective_usd": _rounded(solution.objective) if solution.objective is not None else None,
                   "lower_bound_usd": _rounded(solution.lower_bound) if solution.lower_bound is not None else None,
                   "gap": solution.gap, "seconds": round(solution.seconds, 3) if timing else None},
        "violations": priced.violations,
        "notes": notes,
        "inputs": {"files": w.inputs, "workload": w.settings(), "models": _cards(model),
                   "catalog": model.catalog.raw, "catalog_file": {model.catalog.path: model.catalog.sha256}},
    }


def _context_rows(model: Model, priced: Priced) -> list[dict]:
    o, frame = priced.options, model.workload.contexts
    d = model.demand
    k = model.context_class
    columns = {
        "id": frame["id"].tolist(),
        "tier": [model.tiers.names[t] for t in o.t.tolist()],
        "offering": [model.fleet.names[g] for g in o.g.tolist()],
        "ttft_s": np.round(o.ttft_s, 6).tolist(),
        "slo_s": d.ttft_slo_s[k].tolist(),
        "tpot_s": np.round(o.tpot_s, 6).tolist(),
        "usd": np.round(priced.context_usd, 6).tolist(),
        "gb": np.round(o.stored_gb, 6).tolist(),
        "tokens": frame["tokens"].tolist(),
        "reuses_per_month": frame["reuses_per_month"].tolist(),
        "prompt_tokens": frame["prompt_tokens"].tolist(),
        "output_tokens": frame["output_tokens"].tolist(),
        "writes_per_month": frame["writes_per_month"].tolist(),
        "ttft_slo_s": _nullable(frame["ttft_slo_s"]),
        "tpot_slo_s": _nullable(frame["tpot_slo_s"]),
    }
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def _nullable(column) -> list:
    return column.astype(object).where(column.notna(), None).tolist()


def _cards(model: Model) -> list[dict]:
    cards = {model.card.name: model.card}
    for offering in model.catalog.offerings:
        if offering.calibration is not None:
            cards.setdefault(offering.calibration.model.name, offering.calibration.model)
    return [{k: v for k, v in dataclasses.asdict(card).items() if v is not None} for card in cards.values()]


def _estimates_used(model: Model, placement: Placement, o: Options) -> list[str]:
    used_offerings = {int(g) for g in np.flatnonzero(placement.instances > 0)} | set(o.g.tolist())
    used_tiers = set(o.t.tolist())
    gpus = {model.catalog.offerings[g].gpu.name for g in used_offerings}
    result = []
    for path in model.catalog.estimated:
        if path.startswith("offerings["):
            if int(path[len("offerings["):path.index("]")]) not in used_offerings:
                continue
            path = f"{model.catalog.offerings[int(path[10:path.index(']')])].name}.{path.split('.', 1)[1]}"
        elif path.startswith("tiers["):
            index = int(path[len("tiers["):path.index("]")]) + 1
            if index not in used_tiers:
                continue
            path = f"{model.tiers.names[index]}.{path.split('.', 1)[1]}"
        elif path.startswith("gpus.") and path.split(".")[1] not in gpus:
            continue
        result.append(path)
    return result


def saved_inputs(plan: dict, source: str) -> tuple[Workload, Catalog]:
    """The workload (its contexts included) and catalog a saved plan carries."""
    from .catalog import parse_catalog, parse_model
    from .fields import Section
    from .workload import parse_workload

    if not isinstance(plan, dict) or "inputs" not in plan:
        raise InputError(source, "not a kvplan plan (no 'inputs' key)")
    inputs = Section(plan, source).section("inputs")
    models = {}
    for card_section in inputs.sections("models"):
        card = parse_model(card_section)
        models[card.name] = card
    catalog = parse_catalog(inputs.raw("catalog"), f"{source}: inputs.catalog", models)
    settings = dict(inputs.section("workload").data)
    keep = ("id", "tokens", "reuses_per_month", "prompt_tokens", "output_tokens", "writes_per_month",
            "ttft_slo_s", "tpot_slo_s")
    rows = Section(plan, source).sections("contexts", [])
    settings["contexts"] = [{key: row.data.get(key) for key in keep} for row in rows]
    return parse_workload(settings, source, models, base_dir=None, path="inputs.workload"), catalog


def reprice(plan: dict, source: str) -> tuple[Model, Priced]:
    """Re-price a saved plan with the analytical model alone (no solver), from the inputs it carries."""
    model = prepare(*saved_inputs(plan, source))
    return model, price(model, saved_placement(plan, source, model))


def saved_placement(plan: dict, source: str, model: Model) -> Placement:
    """A saved plan's decisions, on the model of its inputs."""
    from .fields import Section

    root = Section(plan, source)
    rows = root.sections("contexts", [])

    def index(names: tuple[str, ...], name: str, where: str) -> int:
        if name not in names:
            raise InputError(where, f"unknown name {name!r}")
        return names.index(name)

    G = len(model.fleet.names)
    instances, hbm, share = np.zeros(G, np.int64), np.zeros(G, np.int64), np.zeros(G)
    for row in root.sections("fleet"):
        g = index(model.fleet.names, row.string("offering"), row.where("offering"))
        instances[g] = row.number("instances", integer=True)
        hbm[g] = int(row.boolean("hbm_cache", False))
        share[g] = row.number("background_share", 0.0)
    nodes = np.zeros(len(model.tiers.names), np.int64)
    for row in root.sections("tiers"):
        if row.has("nodes"):
            nodes[index(model.tiers.names, row.string("tier"), row.where("tier"))] = row.number("nodes", integer=True)
    offering = np.array([index(model.fleet.names, r.string("offering"), r.where("offering")) for r in rows], np.int64)
    tier = np.array([index(model.tiers.names, r.string("tier"), r.where("tier")) for r in rows], np.int64)
    return Placement(offering, tier, instances, hbm, share, nodes)
