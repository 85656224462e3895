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
from .formulation import (Problem, Solution, fleet_first, month_rows, offerings_used, shares, solve_once,
                          value)
from .plan import (Model, Placement, background_table, diagnose_unplaceable, drop_dominated, option_table,
                   placement_from, prepare, price, silent, solve_restricted)
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
    # Candidate offerings: those the one-month plans of the first and the last month choose, at on-demand
    # prices and at each committed price. The horizon's program is solved over them (its bound is a bound
    # within them); a one-month forecast therefore equals the plan.
    candidates: set[int] = set()
    if workload.mode == "provisioned":
        for m in sorted({0, months - 1}):
            for pricing in ("on_demand",) + tuple(c for c in TERMS if c in commitments):
                prices = np.array([o.prices.get(pricing, np.nan) for o in offerings])
                if not np.isfinite(prices).any():
                    continue
                model = dataclasses.replace(models[m], fleet=dataclasses.replace(models[m].fleet, price=prices))
                table, bg = tables[m]
                placement, _, _ = solve_restricted(model, table, bg, np.ones(len(table.k), bool), solver=solver,
                                                   gap=1e-3, time_limit=time_limit)
                if placement is not None:
                    candidates |= set(np.flatnonzero(placement.instances > 0).tolist())
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
    solved = _solve(hz, solver, gap, time_limit)
    if solved.var is None:
        raise Infeasible(_why_no_forecast(hz, solved.status, solver, gap, time_limit))
    _keep_placements(hz, solved, solver)
    result = _report(hz, solved)
    if commitments:
        plain = dataclasses.replace(hz, spot_price=np.full_like(hz.spot_price, np.nan), committed={})
        on_demand = _solve(plain, solver, gap, time_limit)
        if on_demand.var is not None:
            result["all_on_demand_usd"] = on_demand.objective
            result["commitment_savings_usd"] = on_demand.objective - solved.objective
    result["seconds"] = round(time.perf_counter() - clock, 3)
    progress(f"horizon: ${result['total_usd']:,.2f} ({solved.status}, {result['seconds']:.1f} s)")
    return result


def _solve(hz: Horizon, solver: str, gap: float, time_limit: float | None, minimax: bool = False):
    return fleet_first(lambda integral: _build(hz, integral, minimax), ("od", "sp", "buy", "h"),
                       hz.problems[0].provisioned, solver, gap, time_limit)


def _keep_placements(hz: Horizon, solved, solver: str) -> None:
    """Month by month, keep each context where it was unless moving is cheaper: with the month's fleet fixed,
    find the placement that costs no more than the solver's and moves the fewest contexts (a tie-break the
    horizon program's gap tolerance cannot enforce on its own). The solver's values are replaced in place."""
    var = solved.var
    for m in range(1, len(hz.problems)):
        p = hz.problems[m]
        before = {key: pulp.value(e) for key, e in _tier_counts(hz.problems[m - 1], var["months"][m - 1], True).items()}
        old = var["months"][m]
        spent = float(sum(a * value(v) for a, v in zip(p.options.direct_usd, old["z"]))
                      + sum(a * value(v) for a, v in zip(p.background.compute_usd, old["x"])))
        prob = pulp.LpProblem("kvplan_keep", pulp.LpMinimize)
        counts = _instances(var, len(p.fleet.names), m)
        n = {g: int(sum(counts.values())[g]) for g in (offerings_used(p) if p.provisioned else [])}
        cost, new = month_rows(prob, p, n, "", True)
        for g, h in new["h"].items():
            h.lowBound = h.upBound = round(value(old["h"][g]))
        prob += cost <= spent + 1e-9 * max(1.0, abs(spent)), "no_dearer"
        arrivals = []
        for key, count in _tier_counts(p, new, True).items():
            arrival = prob.add_variable(f"arrive_{key[0]}_{key[1]}", 0, None)
            prob += arrival >= count - before.get(key, 0.0), f"arrive_{key[0]}_{key[1]}"
            arrivals.append(arrival)
        prob += pulp.lpSum(arrivals)
        status, _ = solve_once(prob, solver, 0.0)
        if status == "optimal":
            for name in ("z", "x"):
                for target, source in zip(old[name], new[name]):
                    target.varValue = source.varValue
            for key in ("m",):
                for t, target in old[key].items():
                    target.varValue = new[key][t].varValue


def _why_no_forecast(hz: Horizon, status: str, solver: str, gap: float, time_limit: float | None) -> str:
    if status != "infeasible" or hz.budget is None:
        return f"no plan for the horizon (solver: {status})"
    free = dataclasses.replace(hz, budget=None)
    unconstrained = _solve(free, solver, gap, time_limit)
    peak = _solve(free, solver, gap, time_limit, minimax=True)
    if unconstrained.var is None or peak.var is None:
        return "no plan for the horizon even without the budget"
    report = _report(free, unconstrained)
    over = [row for row in report["months"] if row["total_usd"] > hz.budget]
    lines = [f"over budget: no plan keeps every month within ${hz.budget:,.2f}; the cheapest feasible monthly cap is "
             f"${max(pulp.value(c) for c in peak.var['month_cost']):,.2f}. The cheapest plan overall breaks the cap in "
             + ", ".join(f"month {row['month']} (${row['total_usd']:,.2f})" for row in over)]
    for row in over[:3]:
        lines.append(f"  month {row['month']}: costliest contexts " + ", ".join(
            f"{c['id']} (${c['usd']:,.2f})" for c in row["costliest_contexts"]))
    return "\n".join(lines)


def _report(hz: Horizon, solved) -> dict:
    var = solved.var
    H = hz.problems[0].hours
    months_out, placements = [], []
    ids = hz.models[0].workload.contexts["id"].to_numpy()
    previous_tier = None
    for m, (model, problem, month_var) in enumerate(zip(hz.models, hz.problems, var["months"])):
        G = len(model.fleet.names)
        counts = _instances(var, G, m)
        instances = sum(counts.values())
        hbm = np.zeros(G, dtype=np.int64)
        for g, v in month_var["h"].items():
            hbm[g] = round(value(v))
        nodes = np.zeros(len(model.tiers.names), dtype=np.int64)
        for t, v in month_var["m"].items():
            nodes[t] = round(value(v))
        solution = Solution("optimal", None, None, None, 0.0, "", np.array([round(value(v)) for v in month_var["z"]],
                            dtype=np.int64), shares([value(v) for v in month_var["x"]]), instances, hbm, nodes)
        placement: Placement = placement_from(model, problem, solution)
        priced = price(model, placement)
        compute_by = {"on_demand": model.fleet.price, "spot": hz.spot_price, **hz.committed}
        fleet_usd = sum(np.nan_to_num(compute_by.get(kind, np.zeros(G))) * counts[kind] * H for kind in counts)
        moved = np.zeros(len(ids), dtype=bool) if previous_tier is None else \
            (placement.tier != previous_tier) & (placement.tier != RECOMPUTE)
        move_usd = hz.write_usd[hz.class_of[moved], placement.tier[moved]]
        move_requests = _move_requests(model, hz, placement, moved)
        breakdown = {"compute": float(fleet_usd.sum()),
                     "storage": priced.breakdown["storage"],
                     "network": priced.breakdown["network"] + float(move_usd.sum() - move_requests),
                     "requests": priced.breakdown["requests"] + float(move_requests)}
        order = np.argsort(-priced.context_usd, kind="stable")[:5]
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
    beyond = sum(float(hz.committed[c][g] * H) * round(value(v)) * max(0, m + TERMS[c] - len(hz.problems))
                 for (g, m, c), v in var["buy"].items())
    total = sum(row["total_usd"] for row in months_out)
    return {"months": months_out, "total_usd": total, "commitments_beyond_horizon_usd": beyond,
            "objective_usd": solved.objective, "lower_bound_usd": solved.bound,
            "gap": None if solved.bound is None else max(0.0, (solved.objective - solved.bound) / solved.objective),
            "status": solved.status, "solver": solved.solver, "context_ids": [str(i) for i in ids],
            "placements": placements,
            "purchases": [{"offering": hz.models[0].fleet.names[g], "month": m + 1, "commitment": c,
                           "instances": round(value(v))} for (g, m, c), v in var["buy"].items() if round(value(v))]}


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
