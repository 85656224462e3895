"""Forecasts across months (MODEL.md §7): the months' growth, the horizon planned, and its result month by month.

The reuses of each month come from a growth rate, the contexts' reuses_m1... columns or a long table of forecasts;
the horizon is planned by analyses.horizon; the result is priced month by month with plan.pricing, moves charged
where a context arrives on a stored tier.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pulp

from ..costmodel import RECOMPUTE
from ..inputs.catalog import Catalog
from ..inputs.errors import Infeasible, InputError
from ..inputs.workload import MONTHLY, Workload
from ..plan.options import Model
from ..plan.pricing import Placement, placement_from, price
from ..plan.runner import silent
from .horizon import TERMS, Horizon, HorizonPlan, build_horizon, keep_placements, solve_horizon, solve_whole


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
    plan = solve_horizon(hz, solver, gap, time_limit, progress)
    if plan is None:
        raise Infeasible(_why_no_forecast(hz, solver, gap, time_limit, progress))
    keep_placements(hz, plan, solver)
    result = _result(hz, plan)
    if hz.budget is not None and any(row["total_usd"] > hz.budget * (1 + 1e-9) for row in result["months"]):
        raise Infeasible(_over_budget_reason(hz, result))
    if commitments:
        plain = dataclasses.replace(hz, spot_price=np.full_like(hz.spot_price, np.nan), committed={}, budget=None)
        on_demand_only = not plan.buys and not any(c["spot"].any() for c in plan.counts)
        on_demand = plan if on_demand_only else solve_horizon(plain, solver, gap, time_limit, silent)
        if on_demand is not None:  # a plan that commits to nothing is the all-on-demand plan: no second solve
            result["all_on_demand_usd"] = _result(plain, on_demand)["total_usd"]
            result["commitment_savings_usd"] = result["all_on_demand_usd"] - result["objective_usd"]
    result["seconds"] = round(time.perf_counter() - clock, 3)
    progress(f"horizon: ${result['total_usd']:,.2f} ({result['status']}, {result['seconds']:.1f} s)")
    return result


def _why_no_forecast(hz: Horizon, solver: str, gap: float, time_limit: float | None,
                     progress: Callable[[str], None]) -> str:
    if hz.budget is None:
        return "no plan for the horizon (the solver found none within its limits)"
    free = dataclasses.replace(hz, budget=None)
    plan = solve_horizon(free, solver, gap, time_limit, progress)
    if plan is None:
        return "no plan for the horizon even without the budget"
    return _over_budget_reason(hz, _result(free, plan), solve_whole(free, solver, gap, time_limit, minimax=True))


def _over_budget_reason(hz: Horizon, result: dict, peak=None) -> str:
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


def _result(hz: Horizon, plan: HorizonPlan) -> dict:
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


def _move_requests(model: Model, hz: Horizon, placement: Placement, moved: np.ndarray) -> float:
    """The request part of the moves' writes (the rest is transfer)."""
    T = model.tiers
    t = placement.tier[moved]
    tokens = model.demand.tokens[hz.class_of[moved]]
    objects = np.where(T.object_tokens[t] > 0, np.ceil(tokens / np.maximum(T.object_tokens[t], 1)), 1.0)
    return float(np.sum(objects * T.write_request_price[t]))
