"""Budget forecasts across months (MODEL.md §7): one integer program over the horizon.

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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pulp

from .catalog import Catalog
from .costmodel import RECOMPUTE
from .errors import Infeasible, InputError
from .formulation import (Problem, Solution, build, fleet_first, month_rows, offerings_used, shares,
                          solution_of, solve_once, value)
from .plan import (Model, Placement, background_table, diagnose_unplaceable, drop_dominated, option_table,
                   placement_from, prepare, price, silent)
from .workload import MONTHLY, Workload, demand_classes

TERMS = {"reserved_1y": 12, "reserved_3y": 36}
COMMITMENTS = tuple(TERMS) + ("spot",)
MOVE_TIE_BREAK_USD = 1e-6


def parse_growth(text: str) -> float:
    """'5%/month', '5%' or '0.05' -> 0.05 per month."""
    match = re.fullmatch(r"\s*([-+]?\d*\.?\d+)\s*(%)?\s*(/\s*month)?\s*", text)
    if not match:
        raise InputError(f"--growth {text}", "expected a monthly growth such as 5%/month or 0.05")
    rate = float(match.group(1)) / (100 if match.group(2) else 1)
    if rate <= -1:
        raise InputError(f"--growth {text}", "a monthly growth must be above -100%")
    return rate


def parse_budget(text: str) -> float:
    """'250000/month', '250000' or '$250,000' -> 250000.0."""
    match = re.fullmatch(r"\s*\$?([\d,]*\.?\d+)\s*(/\s*month)?\s*", text)
    if not match:
        raise InputError(f"--budget {text}", "expected USD per month such as 250000/month")
    return float(match.group(1).replace(",", ""))


def monthly_reuses(workload: Workload, months: int, growth: float | None = None,
                   table: pd.DataFrame | None = None, table_file: str = "") -> np.ndarray:
    """Reuses of each context in each month (contexts x months): from a long table (id, month, reuses), from
    the contexts' reuses_m1... columns, or from reuses_per_month grown by `growth` a month (steady if none)."""
    frame = workload.contexts
    if table is not None:
        missing = [c for c in ("id", "month", "reuses") if c not in table.columns]
        if missing:
            raise InputError(table_file, f"missing column {missing[0]!r} (expected id, month, reuses)")
        table = table.assign(id=table["id"].astype(str).str.strip(),
                             month=pd.to_numeric(table["month"], errors="coerce"),
                             reuses=pd.to_numeric(table["reuses"], errors="coerce"))
        bad = table["month"].isna() | (table["month"] < 1) | (table["month"] != table["month"].round()) \
            | table["reuses"].isna() | ~np.isfinite(table["reuses"]) | (table["reuses"] < 0)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise InputError(f"{table_file}: row {row + 1}", "expected a whole month >= 1 and reuses >= 0")
        unknown = set(table["id"]) - set(frame["id"])
        if unknown:
            raise InputError(table_file, f"unknown context id {sorted(unknown)[0]!r}")
        wide = table.pivot_table(index="id", columns="month", values="reuses", aggfunc="sum")
        wide = wide.reindex(index=frame["id"], columns=range(1, months + 1))
        if wide.isna().any().any():
            context, month = next((i, m) for i, row in wide.iterrows() for m, v in row.items() if pd.isna(v))
            raise InputError(table_file, f"no reuses for context {context!r} in month {month}")
        return wide.to_numpy(dtype=float)
    columns = [c for c in frame.columns if MONTHLY.match(c)]
    if columns:
        if len(columns) < months:
            raise InputError("contexts", f"{len(columns)} monthly reuse columns (reuses_m1...) for a horizon of "
                             f"{months} months")
        return frame[[f"reuses_m{m}" for m in range(1, months + 1)]].to_numpy(dtype=float)
    rate = growth or 0.0
    return frame["reuses_per_month"].to_numpy(dtype=float)[:, None] * (1 + rate) ** np.arange(months)[None, :]


@dataclass(frozen=True)
class Horizon:
    models: list[Model]
    problems: list[Problem]
    class_of: np.ndarray        # class of each context
    spot_price: np.ndarray      # per offering (nan: none)
    committed: dict[str, np.ndarray]  # commitment -> price per offering (nan: none)
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
        if len(unplaceable):
            raise Infeasible(f"month {m + 1}: {int(counts[unplaceable].sum())} context(s) cannot meet their SLO "
                             "with any option:\n" + diagnose_unplaceable(model, table, unplaceable))
        bg = background_table(model)
        if len(model.background.count) and not bg.allowed.any():
            raise Infeasible(f"month {m + 1}: background traffic cannot meet the SLO on any offering")
        models.append(model)
        tables.append((table, bg))
    offerings = catalog.offerings
    # Candidate offerings: those the LP relaxations of the first and the last month use, at on-demand prices
    # and at each committed price. The months are solved over them (the bound is a bound within them). A
    # one-month forecast keeps every offering, so that it equals the plan.
    candidates: set[int] = set()
    if workload.mode == "provisioned" and months > 1:
        for m in sorted({0, months - 1}):
            for pricing in ("on_demand",) + tuple(c for c in TERMS if c in commitments):
                prices = np.array([o.prices.get(pricing, np.nan) for o in offerings])
                if np.isfinite(prices).any():
                    table, bg = tables[m]
                    candidates |= _relaxation_offerings(models[m], table, bg, prices, solver)
    for model, (table, bg) in zip(models, tables):
        keep = np.isin(table.g, sorted(candidates)) if candidates else np.ones(len(table.k), bool)
        keep_bg = np.isin(bg.g, sorted(candidates)) if candidates else np.ones(len(bg.k), bool)
        problems.append(Problem(drop_dominated(table.take(table.allowed & keep), model.tiers), model.demand.count,
                                bg.take(bg.allowed & keep_bg), model.fleet, model.tiers, workload.hours_per_month,
                                workload.mode == "provisioned"))
    spot = np.array([o.prices.get("spot", np.nan) for o in offerings]) if "spot" in commitments and spot_share > 0 \
        else np.full(len(offerings), np.nan)
    committed = {c: np.array([o.prices.get(c, np.nan) for o in offerings]) for c in TERMS if c in commitments}
    T = base.tiers
    tokens = demands[0].tokens.astype(float)[:, None]
    size = base.card.kv_bytes_per_token * tokens / 1e9
    objects = np.where(T.object_tokens[None, :] > 0, np.ceil(tokens / np.maximum(T.object_tokens[None, :], 1)), 1.0)
    write_usd = objects * T.write_request_price[None, :] + size * T.transfer_per_gb[None, :]
    write_usd[:, RECOMPUTE] = 0.0
    return Horizon(models, problems, class_of, spot, committed, spot_share, budget, write_usd)


def _relaxation_offerings(model: Model, table, bg, prices: np.ndarray, solver: str) -> set[int]:
    """Offerings the month's LP relaxation buys at `prices`, and the other sizes of their GPUs (an integer
    fleet tops up with smaller instances: keeping only the cheapest size cost month 11 of rag-docs 6% more)."""
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
    gpus = {model.catalog.offerings[g].gpu.name for g, v in var["n"].items() if value(v) > 1e-9}
    return {g for g, o in enumerate(model.catalog.offerings) if o.gpu.name in gpus and fleet.serves[g]}


def _build(hz: Horizon, integral: bool, minimax: bool = False) -> tuple[pulp.LpProblem, dict]:
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


def forecast(workload: Workload, catalog: Catalog, *, months: int, growth: float | None = None,
             table: pd.DataFrame | None = None, table_file: str = "", commitments: tuple[str, ...] = (),
             spot_share: float = 0.0, budget: float | None = None, solver: str = "highs", gap: float = 1e-4,
             time_limit: float | None = None, progress: Callable[[str], None] = silent) -> dict:
    """Plan `months` months at once; the result is a plain dict (JSON-ready) with one row per month."""
    clock = time.perf_counter()
    reuses = monthly_reuses(workload, months, growth, table, table_file)
    traffic_growth = growth if growth is not None and table is None and not any(
        MONTHLY.match(c) for c in workload.contexts.columns) else 0.0
    hz = build_horizon(workload, catalog, months, reuses, commitments=commitments, spot_share=spot_share,
                       budget=budget, traffic_growth=traffic_growth, solver=solver, time_limit=time_limit)
    progress(f"{months} months, {len(hz.problems[0].count)} context classes, "
             f"{sum(len(p.options.k) for p in hz.problems)} options within SLO")
    plan = _solve(hz, solver, gap, time_limit, progress)
    if plan is None:
        raise Infeasible(_why_no_forecast(hz, solver, gap, time_limit, progress))
    _keep_placements(hz, plan, solver)
    result = _report(hz, plan)
    if hz.budget is not None and any(row["total_usd"] > hz.budget * (1 + 1e-9) for row in result["months"]):
        raise Infeasible(_over_budget(hz, result))
    if commitments:
        plain = dataclasses.replace(hz, spot_price=np.full_like(hz.spot_price, np.nan), committed={}, budget=None)
        on_demand_only = not plan.buys and not any(c["spot"].any() for c in plan.counts)
        on_demand = plan if on_demand_only else _solve(plain, solver, gap, time_limit, silent)
        if on_demand is not None:  # a plan that commits to nothing is the all-on-demand plan: no second solve
            result["all_on_demand_usd"] = _report(plain, on_demand)["total_usd"]
            result["commitment_savings_usd"] = result["all_on_demand_usd"] - result["objective_usd"]
    result["seconds"] = round(time.perf_counter() - clock, 3)
    progress(f"horizon: ${result['total_usd']:,.2f} ({result['status']}, {result['seconds']:.1f} s)")
    return result


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


def _solve(hz: Horizon, solver: str, gap: float, time_limit: float | None,
           progress: Callable[[str], None]) -> HorizonPlan | None:
    if sum(len(p.options.k) for p in hz.problems) <= WHOLE_PROGRAM_MAX_OPTIONS:
        solved = _solve_whole(hz, solver, gap, time_limit)
        return None if solved.var is None else _plan_of(hz, solved)
    return _solve_by_month(hz, solver, gap, time_limit, progress)


def _solve_whole(hz: Horizon, solver: str, gap: float, time_limit: float | None, minimax: bool = False):
    return fleet_first(lambda integral: _build(hz, integral, minimax), ("od", "sp", "buy", "h"),
                       hz.problems[0].provisioned, solver, gap, time_limit)


def _plan_of(hz: Horizon, solved) -> HorizonPlan:
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


def _solve_by_month(hz: Horizon, solver: str, gap: float, time_limit: float | None,
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
            floor = solutions[-1].lower_bound if solutions and _no_cheaper(hz, m, paid) else None
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


def _no_cheaper(hz: Horizon, m: int, paid: np.ndarray) -> bool:
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


def _keep_placements(hz: Horizon, plan: HorizonPlan, solver: str) -> None:
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


def _why_no_forecast(hz: Horizon, solver: str, gap: float, time_limit: float | None,
                     progress: Callable[[str], None]) -> str:
    if hz.budget is None:
        return "no plan for the horizon (the solver found none within its limits)"
    free = dataclasses.replace(hz, budget=None)
    plan = _solve(free, solver, gap, time_limit, progress)
    if plan is None:
        return "no plan for the horizon even without the budget"
    return _over_budget(hz, _report(free, plan), _solve_whole(free, solver, gap, time_limit, minimax=True))


def _over_budget(hz: Horizon, result: dict, peak=None) -> str:
    """The cheapest plan breaks the monthly cap: which months, their costliest contexts, and the cheapest
    cap that a plan meets (the smallest largest month where the horizon is solved as one program; the
    cheapest plan's largest month otherwise)."""
    if peak is not None and peak.var is not None:
        cap = max(pulp.value(c) for c in peak.var["month_cost"])
    else:
        cap = max(row["total_usd"] for row in result["months"])
    over = [row for row in result["months"] if row["total_usd"] > hz.budget * (1 + 1e-9)]
    lines = [f"over budget: no plan keeps every month within ${hz.budget:,.2f}; the cheapest feasible monthly cap "
             f"is ${cap:,.2f}. The cheapest plan overall breaks the cap in "
             + ", ".join(f"month {row['month']} (${row['total_usd']:,.2f})" for row in over)]
    for row in over[:3]:
        lines.append(f"  month {row['month']}: costliest contexts " + ", ".join(
            f"{c['id']} (${c['usd']:,.2f})" for c in row["costliest_contexts"]))
    return "\n".join(lines)


def _report(hz: Horizon, plan: HorizonPlan) -> dict:
    H = hz.problems[0].hours
    months_out, placements = [], []
    ids = hz.models[0].workload.contexts["id"].to_numpy()
    previous_tier = None
    for m, (model, problem, solution, counts) in enumerate(zip(hz.models, hz.problems, plan.months, plan.counts)):
        G = len(model.fleet.names)
        placement: Placement = placement_from(model, problem, solution)
        priced = price(model, placement)
        compute_by = {"on_demand": model.fleet.price, "spot": hz.spot_price, **hz.committed}
        fleet_usd = sum(np.nan_to_num(compute_by.get(kind, np.zeros(G))) * counts[kind] * H for kind in counts)
        moved = np.zeros(len(ids), dtype=bool) if previous_tier is None else \
            (placement.tier != previous_tier) & (placement.tier != RECOMPUTE)
        move_usd = hz.write_usd[hz.class_of[moved], placement.tier[moved]]
        move_requests = _move_requests(model, hz, placement, moved)
        breakdown = {"compute": float(np.sum(fleet_usd)) if model.workload.mode == "provisioned"
                     else priced.breakdown["compute"],
                     "storage": priced.breakdown["storage"],
                     "network": priced.breakdown["network"] + float(move_usd.sum() - move_requests),
                     "requests": priced.breakdown["requests"] + float(move_requests)}
        order = np.argsort(-priced.context_usd, kind="stable")[:5]
        instances = solution.n
        months_out.append({
            "month": m + 1,
            "total_usd": float(sum(breakdown.values())),
            "breakdown_usd": breakdown,
            "fleet": [{"offering": model.fleet.names[g], **{k: int(counts[k][g]) for k in counts},
                       "usd": float(fleet_usd[g])} for g in range(G) if instances[g] > 0],
            "contexts_per_tier": {t: int(np.sum(placement.tier == i)) for i, t in enumerate(model.tiers.names)
                                  if np.any(placement.tier == i)},
            "moves": int(moved.sum()),
            "moves_usd": float(move_usd.sum()),
            "costliest_contexts": [{"id": str(ids[i]), "usd": float(priced.context_usd[i])} for i in order],
            "violations": priced.violations,
        })
        placements.append({"tier": [model.tiers.names[t] for t in placement.tier],
                           "offering": [model.fleet.names[g] for g in placement.offering]})
        previous_tier = placement.tier
    M = len(hz.problems)
    beyond = sum(float(hz.committed[c][g] * H) * count * max(0, m + TERMS[c] - M)
                 for (g, m, c), count in plan.buys.items())
    total = sum(row["total_usd"] for row in months_out)
    objective = total + beyond
    bound = None if plan.bound is None else min(plan.bound, objective)
    return {"months": months_out, "total_usd": total, "commitments_beyond_horizon_usd": beyond,
            "objective_usd": objective, "lower_bound_usd": bound,
            "gap": None if bound is None else max(0.0, (objective - bound) / max(objective, 1e-12)),
            "status": plan.status, "solver": plan.solver, "context_ids": [str(i) for i in ids],
            "placements": placements,
            "purchases": [{"offering": hz.models[0].fleet.names[g], "month": m + 1, "commitment": c,
                           "instances": count} for (g, m, c), count in sorted(plan.buys.items())]}


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


def _move_requests(model: Model, hz: Horizon, placement: Placement, moved: np.ndarray) -> float:
    """The request part of the moves' writes (the rest is transfer)."""
    T = model.tiers
    t = placement.tier[moved]
    tokens = model.demand.tokens[hz.class_of[moved]]
    objects = np.where(T.object_tokens[t] > 0, np.ceil(tokens / np.maximum(T.object_tokens[t], 1)), 1.0)
    return float(np.sum(objects * T.write_request_price[t]))
