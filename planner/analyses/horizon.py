"""The horizon of a forecast (MODEL.md §7): one integer program over the months, or the months one by one.

Per month m a fleet and a placement, as in the one-month program (formulation.month_rows), with the instances
of offering g in month m made of three kinds:
    n[g,m] = od[g,m] + spot[g,m] + Σ_c active_c[g,m],   active_c[g,m] = Σ_{m-term_c < m' <= m} buy_c[g,m']
- reserved instances bought in month m' at the committed price for their whole term (12 months for
  reserved_1y, 36 for reserved_3y), used every month they run; the objective counts the whole term, also the
  months past the horizon, which the output reports apart as a commitment beyond the horizon;
- spot instances, at most `spot_share` of an offering's instances in a month (spot capacity can be taken back:
  the share is the part of the fleet the user accepts to lose at short notice; default 0, no spot);
- on-demand instances on top.
A context that moves to another storage tier pays that tier's write (requests and transfer) once; a tiny
tie-break cost per move keeps a placement that has no reason to change where it is. An optional monthly
budget caps each month's cost (compute, storage, network, requests, moves; reserved instances at their
committed price for the months they run).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pulp

from ..costmodel import RECOMPUTE
from ..inputs.catalog import Catalog
from ..inputs.errors import Infeasible
from ..inputs.workload import Workload
from ..plan.options import (Model, background_table, best_effort, demand_classes, drop_dominated, option_table,
                            prepare)
from ..plan.runner import diagnose_unplaceable
from ..solve.exact import Problem, Solution, build, instance_caps, month_rows, offerings_used, solution_of
from ..solve.highs import fleet_first, shares, solve_once, value

TERMS = {"reserved_1y": 12, "reserved_3y": 36}
COMMITMENTS = tuple(TERMS) + ("spot",)
MOVE_TIE_BREAK_USD = 1e-6


@dataclass(frozen=True)
class Horizon:
    models: list[Model]
    problems: list[Problem]
    class_of: np.ndarray        # class of each context
    spot_price: np.ndarray      # per pool (nan: none)
    committed: dict[str, np.ndarray]  # commitment -> price per pool (nan: none)
    spot_share: float
    budget: float | None
    write_usd: np.ndarray       # per class and tier: one write into the tier (requests, transfer)


def build_horizon(workload: Workload, catalog: Catalog, months: int, reuses: np.ndarray, *,
                  commitments: tuple[str, ...], spot_share: float, budget: float | None,
                  traffic_growth: float, solver: str = "highs", time_limit: float | None = None) -> Horizon:
    base = prepare(dataclasses.replace(workload, pricing="on_demand"), catalog)
    demands, class_of = demand_classes(workload, reuses)
    counts = demands[0].count
    models, problems, tables = [], [], []
    for m, demand in enumerate(demands):
        background = dataclasses.replace(
            base.background, reuses_per_month=base.background.reuses_per_month * (1 + traffic_growth) ** m)
        model = dataclasses.replace(base, demand=demand, context_class=class_of, background=background)
        table = option_table(model)
        unplaceable = np.setdiff1d(np.arange(len(counts)), table.k[table.allowed])
        if len(unplaceable) and workload.slo_policy == "best_effort":
            model = best_effort(model, unplaceable)
            table = option_table(model)
            unplaceable = np.setdiff1d(np.arange(len(counts)), table.k[table.allowed])
        if len(unplaceable):
            raise Infeasible(f"month {m + 1}: {int(counts[unplaceable].sum())} context(s) cannot meet their SLO "
                             "with any option:\n" + diagnose_unplaceable(model, table, unplaceable))
        bg = background_table(model)
        if len(model.background.count) and not bg.allowed.any():
            raise Infeasible(f"month {m + 1}: background traffic cannot meet the SLO on any offering")
        models.append(model)
        tables.append((table, bg))
    offerings = catalog.offerings
    pool_offering = base.fleet.offering  # the catalog offering of each pool (an offering at one tp)

    def per_pool(pricing: str) -> np.ndarray:
        return np.array([o.prices.get(pricing, np.nan) for o in offerings], dtype=float)[pool_offering]

    # Candidate offerings: those the LP relaxations of the first and the last month use, at on-demand prices
    # and at each committed price. The months are solved over them (the bound is a bound within them). A
    # one-month forecast keeps every offering, so that it equals the plan.
    candidates: set[int] = set()
    if workload.mode == "provisioned" and months > 1:
        for m in sorted({0, months - 1}):
            for pricing in ("on_demand",) + tuple(c for c in TERMS if c in commitments):
                prices = per_pool(pricing)
                if np.isfinite(prices).any():
                    table, bg = tables[m]
                    candidates |= _relaxation_offerings(models[m], table, bg, prices, solver)
    for model, (table, bg) in zip(models, tables):
        keep = np.isin(table.g, sorted(candidates)) if candidates else np.ones(len(table.k), bool)
        keep_bg = np.isin(bg.g, sorted(candidates)) if candidates else np.ones(len(bg.k), bool)
        problems.append(Problem(drop_dominated(table.take(table.allowed & keep), model.tiers), model.demand.count,
                                bg.take(bg.allowed & keep_bg), model.fleet, model.tiers, workload.hours_per_month,
                                workload.mode == "provisioned"))
    spot = per_pool("spot") if "spot" in commitments and spot_share > 0 else np.full(len(pool_offering), np.nan)
    committed = {c: per_pool(c) for c in TERMS if c in commitments}
    T = base.tiers
    tokens = demands[0].tokens.astype(float)[:, None]
    size = base.card.kv_bytes_per_token * tokens / 1e9
    objects = np.where(T.object_tokens[None, :] > 0, np.ceil(tokens / np.maximum(T.object_tokens[None, :], 1)), 1.0)
    write_usd = objects * T.write_request_price[None, :] + size * T.transfer_per_gb[None, :]
    write_usd[:, RECOMPUTE] = 0.0
    return Horizon(models, problems, class_of, spot, committed, spot_share, budget, write_usd)


def _relaxation_offerings(model: Model, table, bg, prices: np.ndarray, solver: str) -> set[int]:
    """Offerings the month's LP relaxation buys at `prices`, and the other sizes of their GPUs (an integer
    fleet tops up with smaller instances of the same GPU)."""
    fleet = dataclasses.replace(model.fleet, price=prices)
    sold = np.isfinite(prices)
    options = table.take(table.allowed & sold[table.g])
    if len(np.unique(options.k)) < len(model.demand.count):
        return set(range(len(fleet.names)))
    problem = Problem(drop_dominated(options, model.tiers), model.demand.count, bg.take(bg.allowed & sold[bg.g]),
                      fleet, model.tiers, model.workload.hours_per_month, True)
    prob, var = build(problem, integral_placement=False)
    for v in prob.variables():
        v.cat = pulp.LpContinuous
    status, _ = solve_once(prob, solver, 0.0, interior_point=True)
    if status != "optimal":
        return set(range(len(fleet.names)))
    gpu_of = [model.catalog.offerings[i].gpu.name for i in fleet.offering]
    gpus = {gpu_of[g] for g, v in var["n"].items() if value(v) > 1e-9}
    return {g for g in range(len(fleet.names)) if gpu_of[g] in gpus and fleet.serves[g]}


def build_program(hz: Horizon, integral: bool, minimax: bool = False) -> tuple[pulp.LpProblem, dict]:
    """The horizon's program. With `minimax`, the objective is the largest monthly cost (for over-budget
    diagnosis) and the budget rows are left out."""
    prob = pulp.LpProblem("kvplan_forecast", pulp.LpMinimize)
    H = hz.problems[0].hours
    months = len(hz.problems)
    fleet = hz.problems[0].fleet
    provisioned = hz.problems[0].provisioned
    used = sorted(set().union(*(offerings_used(p) for p in hz.problems))) if provisioned else []
    od, sp, buy, hs, moves = {}, {}, {}, {}, {}
    objective = pulp.LpAffineExpression()
    month_cost = [pulp.LpAffineExpression() for _ in range(months)]  # without reservations: the objective
    reserved_cost = [pulp.LpAffineExpression() for _ in range(months)]  # counts their whole term instead
    for g in used:
        for m in range(months):
            od[g, m] = prob.add_variable(f"od_{g}_{m}", 0, None, pulp.LpInteger)
            month_cost[m] += float(fleet.price[g] * H) * od[g, m]
            if np.isfinite(hz.spot_price[g]):
                sp[g, m] = prob.add_variable(f"sp_{g}_{m}", 0, None, pulp.LpInteger)
                month_cost[m] += float(hz.spot_price[g] * H) * sp[g, m]
            for c, prices in hz.committed.items():
                if np.isfinite(prices[g]):
                    buy[g, m, c] = prob.add_variable(f"buy_{c}_{g}_{m}", 0, None, pulp.LpInteger)
                    objective += float(prices[g] * H * TERMS[c]) * buy[g, m, c]
    per_month = []
    for m, p in enumerate(hz.problems):
        n = {}
        for g in used:
            active = pulp.lpSum(buy[g, m2, c] for (g2, m2, c) in buy if g2 == g and m - TERMS[c] < m2 <= m)
            reserved_cost[m] += pulp.lpSum(float(hz.committed[c][g] * H) * buy[g, m2, c]
                                           for (g2, m2, c) in buy if g2 == g and m - TERMS[c] < m2 <= m)
            n[g] = od[g, m] + sp.get((g, m), 0) + active
            if np.isfinite(fleet.max_instances[g]):
                prob += n[g] <= float(fleet.max_instances[g]), f"max_{g}_{m}"
        instance_caps(prob, fleet, n, f"_{m}")
        for g in used:
            active = pulp.lpSum(buy[g, m2, c] for (g2, m2, c) in buy if g2 == g and m - TERMS[c] < m2 <= m)
            if (g, m) in sp:  # spot at most a share of the offering's instances
                prob += (1 - hz.spot_share) * sp[g, m] <= hz.spot_share * (od[g, m] + active), f"spot_{g}_{m}"
        cost, var = month_rows(prob, p, n, f"_{m}", integral)
        month_cost[m] += cost
        per_month.append(var)
        for g, v in var["h"].items():
            hs[g, m] = v
    # Moves: a class's count on a stored tier that grows from one month to the next pays that tier's write.
    for m in range(1, months):
        before, after = _tier_counts(hz.problems[m - 1], per_month[m - 1]), _tier_counts(hz.problems[m], per_month[m])
        for (k, t), count in after.items():
            moves[k, t, m] = prob.add_variable(f"mv_{k}_{t}_{m}", 0, None,
                                               pulp.LpInteger if integral else pulp.LpContinuous)
            prob += moves[k, t, m] >= count - before.get((k, t), 0), f"move_{k}_{t}_{m}"
            month_cost[m] += float(hz.write_usd[k, t]) * moves[k, t, m]
            objective += MOVE_TIE_BREAK_USD * moves[k, t, m]
    if minimax:
        peak = prob.add_variable("peak_month_usd", 0, None)
        for m in range(months):
            prob += month_cost[m] + reserved_cost[m] <= peak, f"peak_{m}"
        prob += peak + 1e-6 * (objective + pulp.lpSum(month_cost))
    else:
        if hz.budget is not None:
            for m in range(months):
                prob += month_cost[m] + reserved_cost[m] <= hz.budget, f"budget_{m}"
        prob += objective + pulp.lpSum(month_cost)
    return prob, {"od": od, "sp": sp, "buy": buy, "h": hs, "moves": moves, "months": per_month,
                  "month_cost": month_cost}


def _tier_counts(p: Problem, var: dict, recompute: bool = False) -> dict[tuple[int, int], pulp.LpAffineExpression]:
    """Contexts of each class on each stored tier (and on recompute, if asked), as expressions of the month's z."""
    counts: dict[tuple[int, int], list] = {}
    for i, (k, t) in enumerate(zip(p.options.k.tolist(), p.options.t.tolist())):
        if recompute or t != RECOMPUTE:
            counts.setdefault((k, t), []).append(var["z"][i])
    return {key: pulp.lpSum(zs) for key, zs in counts.items()}


@dataclass
class HorizonPlan:
    """The horizon's decisions as numbers: per month a one-month solution (its n: all instances running) and
    its instances by kind (on_demand, spot, each reservation); the reservations bought."""
    months: list[Solution]
    counts: list[dict[str, np.ndarray]]
    buys: dict[tuple[int, int, str], int]   # (offering, month, commitment) -> instances
    bound: float | None
    status: str
    solver: str


# Horizons up to this many options are solved as one program (exact moves and budget rows); larger ones
# month by month.
WHOLE_PROGRAM_MAX_OPTIONS = 5_000


def solve_horizon(hz: Horizon, solver: str, gap: float, time_limit: float | None,
           progress: Callable[[str], None]) -> HorizonPlan | None:
    if sum(len(p.options.k) for p in hz.problems) <= WHOLE_PROGRAM_MAX_OPTIONS:
        solved = solve_whole(hz, solver, gap, time_limit)
        return None if solved.var is None else plan_of(hz, solved)
    return solve_by_month(hz, solver, gap, time_limit, progress)


def solve_whole(hz: Horizon, solver: str, gap: float, time_limit: float | None, minimax: bool = False):
    return fleet_first(lambda integral: build_program(hz, integral, minimax), ("od", "sp", "buy", "h"),
                       hz.problems[0].provisioned, solver, gap, time_limit)


def plan_of(hz: Horizon, solved) -> HorizonPlan:
    """The whole program's values as a HorizonPlan."""
    var = solved.var
    G, T = len(hz.problems[0].fleet.names), len(hz.problems[0].tiers.names)
    months, counts = [], []
    for m, month_var in enumerate(var["months"]):
        by_kind = _instances(var, G, m)
        h, nodes = np.zeros(G, np.int64), np.zeros(T, np.int64)
        for g, v in month_var["h"].items():
            h[g] = round(value(v))
        for t, v in month_var["m"].items():
            nodes[t] = round(value(v))
        z = np.array([round(value(v)) for v in month_var["z"]], dtype=np.int64)
        months.append(Solution("optimal", None, None, None, 0.0, solved.solver, z,
                               shares([value(v) for v in month_var["x"]]), sum(by_kind.values()), h, nodes))
        counts.append(by_kind)
    buys = {key: round(value(v)) for key, v in var["buy"].items() if round(value(v))}
    return HorizonPlan(months, counts, buys, solved.bound, solved.status, solved.solver)


def solve_by_month(hz: Horizon, solver: str, gap: float, time_limit: float | None,
                    progress: Callable[[str], None]) -> HorizonPlan | None:
    """Month by month, then commitments: (1) each month's cheapest plan at on-demand prices (spot blended in at
    its share); (2) the reservations that serve those fleets cheapest (a small program over instance counts);
    (3) each month again with the reserved instances already paid for, and the reservations chosen again for
    those fleets. The bound is the sum of each month's bound with every instance at the least an instance-month
    can cost (on-demand or reserved, spot at its share), a bound for any plan over the candidate offerings, moves
    and terms included."""
    clock = time.perf_counter()
    M, F = len(hz.problems), hz.problems[0].fleet
    spot = np.where(np.isfinite(hz.spot_price), hz.spot_price, F.price)
    marginal = (1 - hz.spot_share) * F.price + hz.spot_share * spot
    prepaid = np.zeros((M, len(F.names)), dtype=np.int64)
    left = (lambda: None if time_limit is None else max(time_limit - (time.perf_counter() - clock), 1.0))

    passes = 1 + 2 * bool(hz.committed)
    solves_left = [passes * M]

    def each_month(prices: np.ndarray, paid: np.ndarray, label: str = "") -> list[Solution] | None:
        solutions: list[Solution] = []
        for m in range(M):  # each month starts from the previous month's plan: same options, close numbers
            start = _start_values(solutions[-1], paid[m - 1]) if solutions else None
            floor = solutions[-1].lower_bound if solutions and no_cheaper(hz, m, paid) else None
            share = None if time_limit is None else max(left() / max(solves_left[0], 1), 1.0)
            solves_left[0] -= 1
            solution = _solve_month(hz.problems[m], prices, paid[m], solver, gap, share, start, floor)
            if not solution.has_plan:
                return None
            solutions.append(solution)
            progress(f"month {m + 1}{label}: ${solution.objective:,.2f} ({solution.status})")
        return solutions

    solutions = each_month(marginal, prepaid)
    if solutions is None:
        return None
    counts, buys = _commit(hz, np.array([s.n for s in solutions]), solver)
    bounds = [s.lower_bound for s in solutions]
    if buys:  # again, with the reserved instances already paid for
        prepaid = np.array([sum(counts_m[c] for c in hz.committed) for counts_m in counts])
        solutions = each_month(marginal, prepaid) or solutions
        counts, buys = _commit(hz, np.array([s.n for s in solutions]), solver)
    # The least an instance-month can cost: at most spot_share of an offering's instances are spot, the rest
    # on-demand or reserved (n·((1 - s)·base + s·min(spot, base)) <= the fleet's cost for any such mix).
    base = np.nanmin(np.vstack([F.price] + list(hz.committed.values())), axis=0)
    cheapest = (1 - hz.spot_share) * base + hz.spot_share * np.fmin(spot, base)
    if not np.allclose(cheapest, marginal, equal_nan=True):  # else the first pass's bounds are at these prices
        at_cheapest = each_month(cheapest, np.zeros_like(prepaid), " at the cheapest prices (for the bound)")
        bounds = [None] if at_cheapest is None else [s.lower_bound for s in at_cheapest]
    months = [dataclasses.replace(s, n=sum(c.values())) for s, c in zip(solutions, counts)]
    bound = None if any(b is None for b in bounds) else float(sum(bounds))
    status = "optimal" if all(s.status == "optimal" for s in solutions) else "time_limit"
    return HorizonPlan(months, counts, buys, bound, status, solutions[0].solver)


def _start_values(solution: Solution, prepaid: np.ndarray) -> dict[str, float]:
    """A month's plan as values by variable name of `_solve_month`'s program."""
    values = {f"z_{i}": float(round(v)) for i, v in enumerate(solution.z)}
    values |= {f"x_{j}": float(min(max(v, 0.0), 1.0)) for j, v in enumerate(solution.x)}
    values |= {f"n_{g}": float(v) for g, v in enumerate(solution.n - prepaid)}
    values |= {f"r_{g}": float(v) for g, v in enumerate(prepaid)}
    values |= {f"h_{g}": float(v) for g, v in enumerate(solution.h)}
    return values | {f"m_{t}": float(v) for t, v in enumerate(solution.m)}


def no_cheaper(hz: Horizon, m: int, paid: np.ndarray) -> bool:
    """Whether month m can cost no less than month m - 1 (at the same prices): the same classes, no more
    instances already paid for, and each of month m's options allowed in month m - 1 at no more cost and no
    more use of any capacity (as when reuses and traffic only grow). Then any plan of month m, placed the same
    way, is a plan of month m - 1 that costs no more, and month m - 1's lower bound holds for month m."""
    before, now = hz.models[m - 1], hz.problems[m]
    if np.any(paid[m] > paid[m - 1]) or not np.array_equal(before.demand.count, now.count):
        return False
    pairs = ((before.options(now.options.k, now.options.g, now.options.t, now.options.c), now.options),
             (before.background_options(now.background.g, now.background.c), now.background))
    tolerance = 1e-12
    for earlier, later in pairs:
        if not earlier.allowed.all():
            return False
        for field in ("direct_usd", "gpu_load", "path_gbs", "stored_gb"):
            a, b = getattr(earlier, field), getattr(later, field)
            if np.any(a > b + tolerance * np.maximum(np.abs(b), 1.0)):
                return False
    return True


def _solve_month(p: Problem, price: np.ndarray, prepaid: np.ndarray, solver: str, gap: float,
                 time_limit: float | None, start: dict | None = None, floor: float | None = None) -> Solution:
    """One month's program with instances at `price` on top of `prepaid` ones (reserved: already paid for).
    `floor`: a lower bound known for it (see fleet_first)."""
    clock = time.perf_counter()

    def build_fn(integral: bool):
        prob = pulp.LpProblem("kvplan_month", pulp.LpMinimize)
        bought, free, n = {}, {}, {}
        objective = pulp.LpAffineExpression()
        if p.provisioned:
            for g in offerings_used(p):
                cap = p.fleet.max_instances[g]
                bought[g] = prob.add_variable(f"n_{g}", 0, None if np.isinf(cap) else int(cap), pulp.LpInteger)
                objective += float(price[g] * p.hours) * bought[g]
                n[g] = bought[g]
                if prepaid[g] > 0:
                    free[g] = prob.add_variable(f"r_{g}", 0, int(prepaid[g]), pulp.LpInteger)
                    n[g] = bought[g] + free[g]
                    if np.isfinite(cap):
                        prob += n[g] <= int(cap), f"max_{g}"
            instance_caps(prob, p.fleet, n, "")
        cost, var = month_rows(prob, p, n, "", integral)
        prob += objective + cost
        return prob, {**var, "n": bought, "r": free}

    previous = start  # last month's plan: where the placement stays if this month's fleet is last month's
    if start is not None and p.provisioned:
        start, start_usd = _feasible_start(build_fn, start, solver, time_limit)
        if start is None or floor is None or start_usd - floor > gap * abs(start_usd):
            floor = None  # the start's fleet is dearer than the floor: no shortcut, search the fleets
    solved = fleet_first(build_fn, ("n", "r", "h"), p.provisioned, solver, gap, time_limit, start, floor,
                         previous)
    solution = solution_of(p, solved, clock)
    return dataclasses.replace(solution, n=solution.n + prepaid)


def _feasible_start(build_fn, start: dict[str, float], solver: str,
                    time_limit: float | None) -> tuple[dict | None, float]:
    """A first incumbent for the month's relaxed-fleet program (integer fleet, fractional placement): the
    previous month's fleet, topped up with whole instances where it no longer serves this month, with the
    cheapest fractional placement on it, and its cost (a lower bound of any plan on that fleet). One LP, two
    where instances are topped up;
    (None, inf) where even the topped-up fleet has no placement."""
    prob, var = build_fn(False)
    for name in ("n", "r", "h"):
        for v in var[name].values():
            v.lowBound = round(start.get(v.name) or 0.0)
            if name == "h":
                v.upBound = v.lowBound
            else:  # at least the previous instances, more if need be: fractional here, whole below
                v.cat = pulp.LpContinuous
    status, _ = solve_once(prob, solver, 0.0, time_limit)
    if status != "optimal":
        return None, np.inf
    topped_up = False
    for name in ("n", "r"):
        for v in var[name].values():
            whole = float(np.ceil(value(v) - 1e-9))
            topped_up |= whole > value(v) + 1e-9
            v.lowBound = v.upBound = whole
    if topped_up:  # the fractional instances rounded up: place again on the whole fleet
        status, _ = solve_once(prob, solver, 0.0, time_limit)
    if status != "optimal":
        return None, np.inf
    return {v.name: v.varValue for v in prob.variables()}, float(pulp.value(prob.objective))


def _commit(hz: Horizon, need: np.ndarray, solver: str) -> tuple[list[dict[str, np.ndarray]], dict]:
    """The cheapest mix of on-demand, spot and reserved instances that runs `need` (months x offerings)
    instances of each offering in each month: a small program over instance counts."""
    M, G = need.shape
    H = hz.problems[0].hours
    fleet = hz.problems[0].fleet
    prob = pulp.LpProblem("kvplan_commitments", pulp.LpMinimize)
    od, sp, buy = {}, {}, {}
    objective = pulp.LpAffineExpression()
    for g in np.flatnonzero(need.any(axis=0)).tolist():
        for m in range(M):
            od[g, m] = prob.add_variable(f"od_{g}_{m}", 0, None, pulp.LpInteger)
            objective += float(fleet.price[g] * H) * od[g, m]
            if np.isfinite(hz.spot_price[g]):
                sp[g, m] = prob.add_variable(f"sp_{g}_{m}", 0, None, pulp.LpInteger)
                objective += float(hz.spot_price[g] * H) * sp[g, m]
            for c, prices in hz.committed.items():
                if np.isfinite(prices[g]):
                    buy[g, m, c] = prob.add_variable(f"buy_{c}_{g}_{m}", 0, None, pulp.LpInteger)
                    objective += float(prices[g] * H * TERMS[c]) * buy[g, m, c]
        for m in range(M):
            active = pulp.lpSum(v for (g2, m2, c), v in buy.items() if g2 == g and m - TERMS[c] < m2 <= m)
            prob += od[g, m] + sp.get((g, m), 0) + active >= int(need[m, g]), f"need_{g}_{m}"
            if (g, m) in sp:
                prob += (1 - hz.spot_share) * sp[g, m] <= hz.spot_share * (od[g, m] + active), f"spot_{g}_{m}"
    prob += objective
    solve_once(prob, solver, 0.0)
    var = {"od": od, "sp": sp, "buy": buy}
    counts = [_instances(var, G, m) for m in range(M)]
    return counts, {key: round(value(v)) for key, v in buy.items() if round(value(v))}


def keep_placements(hz: Horizon, plan: HorizonPlan, solver: str) -> None:
    """Month by month, keep each context where it was unless moving is cheaper: with the month's fleet fixed,
    find the placement that costs no more than the chosen one and moves the fewest contexts (a tie-break
    neither the month-by-month solve nor a gap tolerance can enforce). Only the classes that arrived on a tier
    are placed again, the others stay as they are (a small program). The plan is updated in place."""
    for m in range(1, len(hz.problems)):
        p, old = hz.problems[m], plan.months[m]
        before = _tier_totals(hz.problems[m - 1], plan.months[m - 1].z)
        moved = {k for (k, t), count in _tier_totals(p, old.z).items() if count > before.get((k, t), 0.0) + 1e-9}
        if not moved:
            continue  # every context stays on its tier: nothing to keep
        spent = float(p.options.direct_usd @ old.z + p.background.compute_usd @ old.x)
        prob = pulp.LpProblem("kvplan_keep", pulp.LpMinimize)
        n = {g: int(old.n[g]) for g in (offerings_used(p) if p.provisioned else [])}
        cost, new = month_rows(prob, p, n, "", True)
        for g, h in new["h"].items():
            h.lowBound = h.upBound = int(old.h[g])
        for z, k, count in zip(new["z"], p.options.k.tolist(), old.z.tolist()):
            if k not in moved:
                z.lowBound = z.upBound = count
        prob += cost <= spent + 1e-9 * max(1.0, abs(spent)), "no_dearer"
        arrivals = []
        for key, members in _tier_members(p).items():
            arrival = prob.add_variable(f"arrive_{key[0]}_{key[1]}", 0, None)
            prob += arrival >= pulp.lpSum(new["z"][i] for i in members) - before.get(key, 0.0), \
                f"arrive_{key[0]}_{key[1]}"
            arrivals.append(arrival)
        prob += pulp.lpSum(arrivals)
        status, _ = solve_once(prob, solver, 0.0)
        if status == "optimal":
            nodes = old.m.copy()
            for t, v in new["m"].items():
                nodes[t] = round(value(v))
            plan.months[m] = dataclasses.replace(
                old, z=np.array([round(value(v)) for v in new["z"]], dtype=np.int64),
                x=shares([value(v) for v in new["x"]]), m=nodes)


def _tier_members(p: Problem) -> dict[tuple[int, int], list[int]]:
    """The options of each (class, tier), recompute included."""
    members: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(p.options.k.tolist(), p.options.t.tolist())):
        members.setdefault(key, []).append(i)
    return members


def _tier_totals(p: Problem, z: np.ndarray) -> dict[tuple[int, int], float]:
    return {key: float(z[members].sum()) for key, members in _tier_members(p).items()}


def _instances(var: dict, offerings: int, m: int) -> dict[str, np.ndarray]:
    """Instances of each offering running in month m, by kind: on_demand, spot, and each reservation."""
    counts = {kind: np.array([round(value(var[key][g, m])) if (g, m) in var[key] else 0 for g in range(offerings)])
              for kind, key in (("on_demand", "od"), ("spot", "sp"))}
    for c, term in TERMS.items():
        counts[c] = np.zeros(offerings, dtype=np.int64)
        for (g, m2, c2), v in var["buy"].items():
            if c2 == c and m - term < m2 <= m:
                counts[c][g] += round(value(v))
    return counts
