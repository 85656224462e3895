"""Robust plans: one fleet for every scenario, each scenario's placement its own (a two-stage program).

First stage: instances n_g of each offering, bought before the scenario is known. Second stage, per scenario s:
the placement, HBM-cache states and nodes (MODEL.md §5's month rows, on scenario s's options and prices, all
sharing n). With total_s = Σ_g price_{s,g} · H_s · n_g + placement_s and equal scenario weights w_s = 1/S:
    expected   min Σ_s w_s · total_s
    worst      min t,  t >= total_s for every s
    cvar:α     min t + 1/(1 − α) · Σ_s w_s · u_s,  u_s >= total_s − t,  u_s >= 0   (the mean of the worst 1 − α)
Each scenario's own optimum (a plan of that scenario alone) gives the regret of the robust fleet there.
The scenarios must share the catalog's offerings (prices may differ): one fleet cannot be rented on two clouds.
"""

from __future__ import annotations

import time

import numpy as np
import pulp

from ..inputs.catalog import ModelCard
from ..inputs.errors import Infeasible, InputError
from ..plan.options import background_table, drop_dominated, option_table, prepare, problem_of
from ..plan.pricing import placement_from, price
from ..plan.runner import make_plan
from ..solve.exact import Solution, instance_caps, month_rows, offerings_used
from ..solve.highs import shares, solve_once, value
from .scenarios import Base, Scenario, apply

MAX_SCENARIOS = 50   # one program holds every scenario's placement


def parse_objective(text: str) -> tuple[str, float | None]:
    if text in ("expected", "worst"):
        return text, None
    if text.startswith("cvar:"):
        try:
            alpha = float(text[5:])
        except ValueError:
            alpha = -1.0
        if 0 <= alpha < 1:
            return "cvar", alpha
    raise InputError(f"--robust {text}", "expected expected, worst or cvar:ALPHA with 0 <= ALPHA < 1")


def robust_plan(b: Base, scenarios: list[Scenario], objective: str, alpha: float | None,
                models: dict[str, ModelCard], solver: str = "highs", gap: float = 1e-4,
                time_limit: float | None = None, progress=lambda message: None) -> dict:
    if len(scenarios) > MAX_SCENARIOS:
        raise InputError(b.scenarios_file, f"{len(scenarios)} scenarios: a robust plan takes at most "
                                           f"{MAX_SCENARIOS} (one program holds every scenario's placement)")
    clock = time.perf_counter()
    models_s = [prepare(*apply(b, s, models)) for s in scenarios]
    names = models_s[0].fleet.names
    for s, m in zip(scenarios, models_s):
        if m.fleet.names != names:
            raise InputError(f"{b.scenarios_file}: scenario {s.id}", "its catalog's offerings differ from the "
                             "first scenario's: a robust plan rents one fleet, on one catalog")
        if m.workload.mode != "provisioned":
            raise InputError(f"{b.scenarios_file}: scenario {s.id}", "robust plans choose a fleet: provisioned "
                             "mode only")
    problems = []
    for s, m in zip(scenarios, models_s):
        table = option_table(m)
        missing = np.setdiff1d(np.arange(len(m.demand.count)), table.k[table.allowed])
        if len(missing):
            raise Infeasible(f"scenario {s.id}: {int(m.demand.count[missing].sum())} context(s) meet no SLO")
        background = background_table(m)
        problems.append(problem_of(m, drop_dominated(table.take(table.allowed), m.tiers),
                                 background.take(background.allowed)))

    prob = pulp.LpProblem("kvplan_robust", pulp.LpMinimize)
    fleet = models_s[0].fleet
    used = sorted(set().union(*(offerings_used(p) for p in problems)))
    n = {g: prob.add_variable(f"n_{g}", 0, None if np.isinf(fleet.max_instances[g]) else int(fleet.max_instances[g]),
                              pulp.LpInteger) for g in used}
    instance_caps(prob, fleet, n, "")
    totals, variables = [], []
    for j, (p, m) in enumerate(zip(problems, models_s)):
        placement_cost, var = month_rows(prob, p, n, f"_s{j}", True)
        rent = pulp.lpSum(float(m.fleet.price[g] * m.workload.hours_per_month) * n[g] for g in used)
        totals.append(rent + placement_cost)
        variables.append(var)
    weight = 1.0 / len(scenarios)
    if objective == "expected":
        prob += pulp.lpSum(weight * total for total in totals)
    else:
        t = prob.add_variable("t", None, None)
        if objective == "worst":
            for j, total in enumerate(totals):
                prob += t >= total, f"worst_{j}"
            prob += t
        else:
            u = [prob.add_variable(f"u_{j}", 0, None) for j in range(len(totals))]
            for j, total in enumerate(totals):
                prob += u[j] >= total - t, f"excess_{j}"
            prob += t + (1.0 / (1.0 - alpha)) * pulp.lpSum(weight * uj for uj in u)
    progress(f"robust program: {len(scenarios)} scenarios, {len(prob.variables()):,} variables")
    status, bound = solve_once(prob, solver, gap, time_limit)
    if status not in ("optimal", "feasible", "time_limit"):
        raise Infeasible(f"no fleet serves every scenario ({status})")
    G = len(names)
    instances = np.zeros(G, np.int64)
    for g, v in n.items():
        instances[g] = round(value(v))
    rows = []
    for s, p, m, var in zip(scenarios, problems, models_s, variables):
        h, nodes = np.zeros(G, np.int64), np.zeros(len(m.tiers.names), np.int64)
        for g, v in var["h"].items():
            h[g] = round(value(v))
        for t_, v in var["m"].items():
            nodes[t_] = round(value(v))
        solution = Solution(status, None, None, None, 0.0, solver,
                            np.array([round(value(v)) for v in var["z"]], np.int64),
                            shares([value(v) for v in var["x"]]), instances, h, nodes)
        priced = price(m, placement_from(m, p, solution))
        own = make_plan(m.workload, m.catalog, solver=solver, gap=gap, time_limit=time_limit, baselines=False)
        progress(f"scenario {s.id}: robust ${priced.total:,.2f}, its own plan ${own['total_usd']:,.2f}")
        rows.append({"scenario": s.id, "robust_usd": priced.total, "own_optimum_usd": own["total_usd"],
                     "regret_usd": priced.total - own["total_usd"],
                     "own_fleet": " + ".join(f"{f['instances']}x {f['offering']}" for f in own["fleet"]
                                             if f["instances"]),
                     "violations": priced.violations})
    robust = np.array([r["robust_usd"] for r in rows])
    if objective == "expected":
        value_usd = float(robust.mean())
    elif objective == "worst":
        value_usd = float(robust.max())
    else:
        value_usd = cvar(robust, alpha)
    objective_value = pulp.value(prob.objective)
    return {"objective": objective if alpha is None else f"cvar:{alpha:g}", "objective_usd": value_usd,
            "solver_objective_usd": float(objective_value), "lower_bound_usd": bound, "status": status,
            "fleet": [{"offering": fleet.offering_names[g], "tp": int(fleet.tp[g]), "instances": int(instances[g])}
                      for g in np.flatnonzero(instances)],
            "scenarios": rows, "seconds": time.perf_counter() - clock}


def cvar(costs: np.ndarray, alpha: float) -> float:
    """The mean of the worst (1 − α) share of equally likely costs (Rockafellar–Uryasev, by sorting)."""
    costs = np.sort(np.asarray(costs, float))[::-1]
    tail = (1 - alpha) * len(costs)
    whole = int(np.floor(tail))
    total = costs[:whole].sum() + (tail - whole) * (costs[whole] if whole < len(costs) else 0.0)
    return float(total / tail) if tail > 0 else float(costs[0])
