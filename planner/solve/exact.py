"""The integer program of MODEL.md §5 (provisioned) and §6 (per_use), built with PuLP from the option table.

Symbols as in MODEL.md: n_g instances of offering g, z_{k,o} how many contexts of class k take option o
(identical contexts form a class; integer counts are exact), h_g whether g keeps an HBM cache, x_j the share
of background traffic on background option j, m_t nodes of a node-priced tier. Every constraint family is
built in one place below, in the order MODEL.md lists them. The model only reads the option table; all the
numbers come from costmodel.evaluate.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pulp

from ..costmodel import PATH_BLOCK, PATH_NETWORK, Fleet, Options, Tiers
from .highs import Solved, fleet_first, shares, value


@dataclass(frozen=True)
class Problem:
    """Everything the program reads: allowed options, the background's options, and the fleet's capacities."""
    options: Options            # allowed (available and within SLO) options of the context classes
    count: np.ndarray           # contexts per class
    background: Options         # allowed options of the background traffic (recompute, one class)
    fleet: Fleet
    tiers: Tiers
    hours: float
    provisioned: bool


@dataclass(frozen=True)
class Solution:
    status: str                 # optimal | feasible | time_limit | infeasible | not_solved
    objective: float | None
    lower_bound: float | None
    gap: float | None
    seconds: float
    solver: str
    z: np.ndarray               # contexts per option (aligned with Problem.options)
    x: np.ndarray               # background share per background option
    n: np.ndarray               # instances per offering
    h: np.ndarray               # 1 where the offering keeps an HBM cache
    m: np.ndarray               # nodes per tier (node-priced memory services)

    @property
    def has_plan(self) -> bool:
        return self.status in ("optimal", "feasible", "time_limit")


def _groups(*keys: np.ndarray) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(zip(*(k.tolist() for k in keys))):
        groups[key].append(i)
    return groups


def _sum(coefs, variables) -> pulp.LpAffineExpression:
    return pulp.LpAffineExpression([(v, float(a)) for v, a in zip(variables, coefs) if a != 0])


def offerings_used(p: Problem) -> list[int]:
    return sorted(set(p.options.g.tolist()) | set(p.background.g.tolist()))


def build(p: Problem, integral_placement: bool = True) -> tuple[pulp.LpProblem, dict]:
    """The one-month program: n_g instances of each offering at its price for the month, and the month's rows."""
    prob = pulp.LpProblem("kvplan", pulp.LpMinimize)
    n = {}
    objective = pulp.LpAffineExpression()
    if p.provisioned:
        for g in offerings_used(p):
            cap = p.fleet.max_instances[g]
            n[g] = prob.add_variable(f"n_{g}", 0, None if np.isinf(cap) else int(cap), pulp.LpInteger)
            objective += float(p.fleet.price[g] * p.hours) * n[g]
        instance_caps(prob, p.fleet, n, "")
    month_cost, var = month_rows(prob, p, n, "", integral_placement)
    prob += objective + month_cost
    return prob, {**var, "n": n}


def instance_caps(prob: pulp.LpProblem, fleet: Fleet, n: dict, tag: str) -> None:
    """max_instances caps the sum of an offering's pools (its tensor-parallel versions, MODEL.md §4); a pool's
    own bound already caps an offering with one pool in `n`."""
    pools_of: dict[int, list[int]] = defaultdict(list)
    for g in n:
        pools_of[int(fleet.offering[g])].append(g)
    for offering, pools in pools_of.items():
        cap = fleet.max_instances[pools[0]]
        if len(pools) > 1 and np.isfinite(cap):
            prob += pulp.lpSum(n[g] for g in pools) <= float(cap), f"max_{offering}{tag}"


def month_rows(prob: pulp.LpProblem, p: Problem, n: dict, tag: str,
               integral_placement: bool) -> tuple[pulp.LpAffineExpression, dict]:
    """Variables and rows of one month, given the instances n[g] available to it (variables or expressions).
    Returns the month's placement cost (everything but the instances) and its variables."""
    o, bg, F = p.options, p.background, p.fleet
    z_cat = pulp.LpInteger if integral_placement else pulp.LpContinuous
    z = [prob.add_variable(f"z{tag}_{i}", 0, int(p.count[k]), z_cat) for i, k in enumerate(o.k)]
    x = [prob.add_variable(f"x{tag}_{j}", 0, 1) for j in range(len(bg.k))]
    used = offerings_used(p)
    h, m = {}, {}
    objective = _sum(o.direct_usd, z) + _sum(bg.compute_usd, x)

    # Each context class is placed, count for count; background traffic is routed in full.
    for (k,), members in _groups(o.k).items():
        prob += pulp.lpSum(z[i] for i in members) == int(p.count[k]), f"assign_{k}{tag}"
    if len(x):
        prob += pulp.lpSum(x) == 1, f"background{tag}"

    if p.provisioned:
        for g in sorted(set(o.g[o.c == 1].tolist()) | set(bg.g[bg.c == 1].tolist())):
            h[g] = prob.add_variable(f"h{tag}_{g}", 0, 1, pulp.LpBinary)
        by_g, bg_by_g = _groups(o.g), _groups(bg.g)

        # GPU capacity: peak GPU-seconds per second of contexts, cache builds and background.
        for g in used:
            members, bg_members = by_g.get((g,), []), bg_by_g.get((g,), [])
            load = _sum(o.gpu_load[members], [z[i] for i in members]) \
                + _sum(bg.gpu_load[bg_members], [x[j] for j in bg_members])
            prob += load <= float(F.gpu_capacity[g]) * n[g], f"gpu_{g}{tag}"

        # Linking: a class placed on g needs n_g >= 1 (per class: the strong form of this facility-location row).
        for (k, g), members in _groups(o.k, o.g).items():
            prob += pulp.lpSum(z[i] for i in members) <= int(p.count[k]) * n[g], f"link_{k}_{g}{tag}"
        # HBM-cache state: options priced with the cache need h_g = 1, those priced without it h_g = 0
        # (aggregated per offering: branching on the few h_g is cheap, rows per class are not).
        total = int(p.count.sum())
        for g in h:
            cached = [z[i] for i in by_g.get((g,), []) if o.c[i] == 1]
            plain = [z[i] for i in by_g.get((g,), []) if o.c[i] == 0]
            if cached:
                prob += pulp.lpSum(cached) <= total * h[g], f"hbm_on_{g}{tag}"
            if plain:
                prob += pulp.lpSum(plain) <= total * (1 - h[g]), f"hbm_off_{g}{tag}"
        for j in range(len(x)):
            g = int(bg.g[j])
            prob += x[j] <= n[g], f"link_bg_{j}{tag}"
            if g in h:
                prob += x[j] <= (h[g] if bg.c[j] == 1 else 1 - h[g]), f"hbm_bg_{j}{tag}"

        # Attached-tier capacity, pooled per offering; path bandwidth from remote tiers at peak.
        kinds = np.asarray(p.tiers.kinds, dtype=object)[o.t]
        paths = p.tiers.path[o.t]
        rows = (("hbm", kinds == "hbm", o.stored_gb, F.hbm_cache_gb),
                ("host", kinds == "host_memory", o.stored_gb, F.host_cache_gb),
                ("nvme", kinds == "local_nvme", o.stored_gb, F.nvme_cache_gb),
                ("network", paths == PATH_NETWORK, o.path_gbs, F.network_cap_gbs),
                ("block", paths == PATH_BLOCK, o.path_gbs, F.block_cap_gbs))
        for name, selected, use, capacity in rows:
            for (g,), members in _groups(o.g[selected]).items():
                idx = np.flatnonzero(selected)[members]
                prob += _sum(use[idx], [z[i] for i in idx]) <= float(capacity[g]) * n[g], f"{name}_{g}{tag}"

    # Node-priced memory services: stored GB within the nodes bought.
    node_priced = np.flatnonzero(np.isfinite(p.tiers.node_gb))
    for t in node_priced:
        members = np.flatnonzero(o.t == t)
        if len(members):
            m[t] = prob.add_variable(f"m{tag}_{t}", 0, None, pulp.LpInteger)
            objective += float(p.tiers.node_price_per_hour[t] * p.hours) * m[t]
            prob += _sum(o.stored_gb[members], [z[i] for i in members]) <= float(p.tiers.node_gb[t]) * m[t], f"nodes_{t}{tag}"

    return objective, {"z": z, "x": x, "h": h, "m": m}


# Programs with more options than this start from a plan on a few pools (`first_plan`).
FIRST_PLAN_OPTIONS = 5_000
FIRST_PLAN_POOLS = 6


def solve_program(p: Problem, solver: str = "highs", gap: float = 1e-4, time_limit: float | None = None) -> Solution:
    """The one-month program, fleet first (see `fleet_first`). A large program starts from `first_plan`'s plan:
    with a good incumbent the solver fixes most pools' instances to zero by reduced cost right after its first
    LP, and a plan it cannot improve on is returned as it is. The result is the whole program's, either way."""
    clock = time.perf_counter()
    first = None
    if p.provisioned and len(p.options.k) > FIRST_PLAN_OPTIONS:
        first = first_plan(p, solver, gap, None if time_limit is None else time_limit / 4)
    left = None if time_limit is None else max(time_limit - (time.perf_counter() - clock), 1.0)
    result = fleet_first(lambda integral: build(p, integral), ("n", "h"), p.provisioned, solver, gap, left,
                         None if first is None else first.values, placement="z")
    if first is not None and result.status in ("not_solved", "time_limit") \
            and (result.objective is None or result.objective > first.objective):
        prob, var = build(p, True)  # out of time with nothing better: the first plan is the answer
        for v in prob.variables():
            v.varValue = first.values.get(v.name, 0.0)
        result = Solved("time_limit", prob, var, first.objective, result.bound, result.solver)
    return solution_of(p, result, clock)


@dataclass(frozen=True)
class FirstPlan:
    pools: np.ndarray           # the pools it may use
    objective: float
    values: dict                # its value of every variable of the whole program, by name


def pool_scores(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Each class's fluid cost on each pool (class × pool: its cheapest option there with the instance bought by
    the largest share of a capacity the option uses; infinite where it has none), and each pool's cost of serving
    everything alone (every class at that option, the background too, whole instances to cover each row)."""
    o, F, G = p.options, p.fleet, len(p.fleet.names)
    kinds = np.asarray(p.tiers.kinds, dtype=object)[o.t]
    paths = p.tiers.path[o.t]
    use = np.stack([o.gpu_load] + [np.where(selected, amount, 0.0) for selected, amount in (
        (kinds == "hbm", o.stored_gb), (kinds == "host_memory", o.stored_gb), (kinds == "local_nvme", o.stored_gb),
        (paths == PATH_NETWORK, o.path_gbs), (paths == PATH_BLOCK, o.path_gbs))], axis=1)
    capacity = np.stack([F.gpu_capacity, F.hbm_cache_gb, F.host_cache_gb, F.nvme_cache_gb, F.network_cap_gbs,
                         F.block_cap_gbs], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(use > 0, use / capacity[o.g], 0.0)
    node_gb = p.tiers.node_gb[o.t]
    priced_by_node = np.isfinite(node_gb)
    nodes = np.where(priced_by_node, o.stored_gb / np.where(priced_by_node, node_gb, 1.0)
                     * np.nan_to_num(p.tiers.node_price_per_hour[o.t]) * p.hours, 0.0)
    own = o.direct_usd + nodes
    fluid = own + np.nan_to_num(share.max(axis=1), nan=np.inf) * F.price[o.g] * p.hours
    order = np.lexsort((fluid, o.g, o.k))        # each class's cheapest option on each pool comes first
    head = np.ones(len(order), dtype=bool)
    head[1:] = (o.k[order][1:] != o.k[order][:-1]) | (o.g[order][1:] != o.g[order][:-1])
    pick = order[head]
    best = np.full((len(p.count), G), np.inf)
    best[o.k[pick], o.g[pick]] = fluid[pick]
    load = np.zeros((G, capacity.shape[1]))
    np.add.at(load, o.g[pick], p.count[o.k[pick], None] * use[pick])
    direct = np.bincount(o.g[pick], weights=p.count[o.k[pick]] * own[pick], minlength=G)
    bg = p.background
    if len(bg.k):
        bg_load = np.full(G, np.inf)
        np.minimum.at(bg_load, bg.g, bg.gpu_load)
        load[:, 0] += bg_load
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(load > 0, load / capacity, 0.0)
    instances = np.maximum(1.0, np.ceil(np.nan_to_num(ratio, nan=np.inf).max(axis=1) * (1 - 1e-9)))
    with np.errstate(over="ignore", invalid="ignore"):
        alone = direct + instances * F.price * p.hours
    alone = np.where(np.isfinite(best).all(axis=0) & np.isfinite(alone), alone, np.inf)
    return best, alone


def first_plan(p: Problem, solver: str, gap: float, time_limit: float | None,
               pools: int | None = None) -> FirstPlan | None:
    """A plan of the whole program, found on a few pools: the `pools` that serve everything alone most cheaply
    (`pool_scores`), and, greedily, pools for any class none of those serves. None where they hold no plan."""
    best, alone = pool_scores(p)
    ranked = np.argsort(alone, kind="stable")
    chosen = [int(g) for g in ranked[np.isfinite(alone[ranked])][:FIRST_PLAN_POOLS if pools is None else pools]]
    uncovered = ~np.isfinite(best[:, chosen]).any(axis=1) if chosen else np.ones(len(p.count), bool)
    while uncovered.any():  # greedily, the pool that serves most of the classes no chosen pool serves
        covers = np.isfinite(best[uncovered]).sum(axis=0)
        covers[chosen] = 0
        if covers.max() == 0:
            return None
        chosen.append(int(np.argmax(covers)))
        uncovered &= ~np.isfinite(best[:, chosen[-1]])
    chosen = np.array(sorted(chosen))
    keep = np.isin(p.options.g, chosen)
    keep_bg = np.isin(p.background.g, chosen)
    if len(p.background.k) and not keep_bg.any():
        return None
    sub = Problem(p.options.take(keep), p.count, p.background.take(keep_bg), p.fleet, p.tiers, p.hours,
                  p.provisioned)
    result = fleet_first(lambda integral: build(sub, integral), ("n", "h"), True, solver, gap, time_limit,
                         placement="z")
    if result.var is None or result.objective is None:
        return None
    values = {f"z_{i}": round(value(v)) for i, v in zip(np.flatnonzero(keep), result.var["z"])}
    values.update({f"x_{j}": value(v) for j, v in zip(np.flatnonzero(keep_bg), result.var["x"])})
    for name in ("n", "h", "m"):
        values.update({f"{name}_{key}": round(value(v)) for key, v in result.var[name].items()})
    return FirstPlan(chosen, float(result.objective), values)


def solution_of(p: Problem, result: Solved, clock: float) -> Solution:
    G, T = len(p.fleet.names), len(p.tiers.names)
    n, h, m = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64), np.zeros(T, dtype=np.int64)
    z, x = np.zeros(0, np.int64), np.zeros(0)
    var = result.var
    if var is not None:
        z = np.array([round(value(v)) for v in var["z"]], dtype=np.int64)
        x = shares([value(v) for v in var["x"]])
        for name, out in (("n", n), ("h", h), ("m", m)):
            for key, v in var[name].items():
                out[key] = round(value(v))
    objective, bound = result.objective, result.bound
    gap_value = None
    if objective is not None and bound is not None:
        bound = min(bound, objective)
        gap_value = max(0.0, (objective - bound) / max(abs(objective), 1e-12))
    return Solution(result.status, objective, bound, gap_value, time.perf_counter() - clock, result.solver,
                    z, x, n, h, m)
