"""The integer program of MODEL.md §5 (provisioned) and §6 (per_use), built with PuLP from the option table.

Symbols as in MODEL.md: n_g instances of offering g, z_{k,o} how many contexts of class k take option o
(identical contexts form a class; integer counts are exact), h_g whether g keeps an HBM cache, x_j the share
of background traffic on background option j, m_t nodes of a node-priced tier. Every constraint family is
built in one place below, in the order MODEL.md lists them. The model only reads the option table; all the
numbers come from costmodel.evaluate.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pulp

from .costmodel import PATH_BLOCK, PATH_NETWORK, Fleet, Options, Tiers
from .errors import log


# The solver's integrality tolerance: an integer variable within it of a whole number counts as that number, so
# a background share x_j <= n_g can be up to this much on an offering with no instance. Shares within it are zero
# (MODEL.md §5, linking): in the solver's rounding (`shares`) and when a priced plan is checked alike.
SOLVER_TOLERANCE = 1e-6


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
    month_cost, var = month_rows(prob, p, n, "", integral_placement)
    prob += objective + month_cost
    return prob, {**var, "n": n}


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


def solve(p: Problem, solver: str = "highs", gap: float = 1e-4, time_limit: float | None = None) -> Solution:
    """The one-month program, fleet first (see `fleet_first`)."""
    clock = time.perf_counter()
    result = fleet_first(lambda integral: build(p, integral), ("n", "h"), p.provisioned, solver, gap, time_limit)
    return solution_of(p, result, clock)


@dataclass(frozen=True)
class Solved:
    status: str
    prob: pulp.LpProblem | None
    var: dict | None
    objective: float | None
    bound: float | None
    solver: str


def fleet_first(build_fn, fleet: tuple[str, ...], has_fleet: bool, solver: str, gap: float,
                time_limit: float | None, start: dict | None = None, floor: float | None = None,
                incumbent: dict | None = None) -> Solved:
    """Fleet first, then placement; the full program only where that leaves a gap above `gap`.

    1. Relax the placement (z continuous), keep the fleet (the variables named in `fleet`) integer: its dual
       bound is a valid lower bound of the whole program, and its fleet is almost always the optimal one, since
       fleet cost dominates.
    2. Fix that fleet and solve the placement with integer z: a plan, and an upper bound. The relaxed placement
       has at most as many fractional classes as there are capacity rows, so this is quick.
    3. If the two bounds are further apart than `gap`, solve the whole program, started from step 2's plan.
    Without a fleet (per_use) the program is solved directly. `build_fn(integral_placement)` builds it.
    `start` (values by variable name, e.g. a similar program's plan) is handed to step 1 as a first incumbent:
    with a good one, HiGHS proves the bound in little more than the time of the LP. `floor`, a lower bound known
    from elsewhere (e.g. an easier month of a forecast): when `start`'s fleet, fixed, gives a plan within `gap`
    of it, that plan is returned with the floor as its bound, and step 1 is skipped; that fixed solve starts from
    `incumbent` (integer values by name, e.g. last month's plan), kept where nothing is cheaper within `gap`.
    """
    clock = time.perf_counter()
    if solver == "highs" and not _highs_available():
        log.warning("HiGHS (highspy) is not available; falling back to CBC")
        solver = "cbc"

    def remaining() -> float | None:
        return None if time_limit is None else max(time_limit - (time.perf_counter() - clock), 1.0)

    def run(prob: pulp.LpProblem, gap_: float, start_: dict | None) -> tuple[str, float | None]:
        nonlocal solver
        if solver == "highs":
            try:
                return _solve_highs(prob, gap_, remaining(), start_)
            except Exception as exc:  # a broken HiGHS install or a crash inside it: CBC still gives a plan
                log.warning("HiGHS failed (%s: %s); falling back to CBC", type(exc).__name__, exc)
                solver = "cbc"
        return _solve_cbc(prob, gap_, remaining(), warm=start_ is not None)

    def fleet_vars(var: dict):
        for name in fleet:
            yield from var[name].items() if isinstance(var[name], dict) else enumerate(var[name])

    def fixed_fleet(values: dict, first: dict | None = None) -> tuple[str, pulp.LpProblem, dict]:
        """Step 2: the placement, integer, with the fleet in `values`; failing that, that fleet or more.
        `first`: a plan to start from."""
        for exact in (True, False):
            fixed, fixed_var = build_fn(True)
            for _, var in fleet_vars(fixed_var):
                var.lowBound = round(values.get(var.name) or 0)
                if exact or var.upBound == 1:
                    var.upBound = var.lowBound
            status, _ = run(fixed, min(gap, 1e-6) / 2 if first is None else gap / 2, first)
            if status != "infeasible":
                break
        return status, fixed, fixed_var

    bound = -np.inf if floor is None else floor
    plan: dict | None = None  # step 2's plan, the start of step 3
    if has_fleet and floor is not None and start is not None:
        status, fixed, fixed_var = fixed_fleet(start, incumbent)
        if status in ("optimal", "feasible", "time_limit"):
            objective = pulp.value(fixed.objective)
            if objective - floor <= gap * abs(objective):
                return Solved("optimal", fixed, fixed_var, objective, floor, solver)
    if has_fleet:
        relaxed, relaxed_var = build_fn(False)
        status, relaxed_bound = run(relaxed, gap / 2, start)
        if status == "infeasible":
            return Solved("infeasible", None, None, None, None, solver)
        if status in ("optimal", "feasible", "time_limit") and relaxed_bound is not None:
            bound = max(relaxed_bound, bound)
            status, fixed, fixed_var = fixed_fleet({v.name: v.varValue for _, v in fleet_vars(relaxed_var)})
            if status in ("optimal", "feasible", "time_limit"):
                objective = pulp.value(fixed.objective)
                if objective - bound <= gap * abs(objective):
                    return Solved("optimal", fixed, fixed_var, objective, bound, solver)
                plan = {var.name: var.varValue for var in fixed.variables()}
    full, full_var = build_fn(True)
    if plan is not None:
        for var in full.variables():  # the solver's values, rounded and clipped back into their bounds
            v = plan.get(var.name) or 0.0
            v = round(v) if var.cat == pulp.LpInteger else v
            var.setInitialValue(min(max(v, var.lowBound if var.lowBound is not None else -np.inf),
                                    var.upBound if var.upBound is not None else np.inf))
    status, full_bound = run(full, gap, plan)
    if status in ("optimal", "feasible", "time_limit"):
        best = max(bound, full_bound if full_bound is not None else -np.inf)
        objective = pulp.value(full.objective)
        if objective - best <= gap * abs(objective):
            status = "optimal"
        return Solved(status, full, full_var, objective, best if np.isfinite(best) else None, solver)
    return Solved(status, None, None, None, None, solver)


def value(v) -> float:
    return 0.0 if v is None or v.varValue is None else float(v.varValue)


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


def shares(values) -> np.ndarray:
    """Background shares without the solver's round-off: those within SOLVER_TOLERANCE of zero are zero (a share
    x_j <= n_g on an offering whose n_g rounds to 0 can be that large), the rest add up to 1."""
    x = np.array(values, dtype=float)
    x[x <= SOLVER_TOLERANCE] = 0.0
    return x / x.sum() if len(x) and x.sum() > 0 else x


def solve_once(prob: pulp.LpProblem, solver: str, gap: float, time_limit: float | None = None,
               interior_point: bool = False) -> tuple[str, float | None]:
    """Solve a built program as it is (no fleet-first steps): status and bound. `interior_point`: an LP by
    HiGHS's interior-point method (with crossover), faster than simplex on large degenerate LPs."""
    if solver == "highs":
        return _solve_highs(prob, gap, time_limit, method="ipm" if interior_point else "choose")
    return _solve_cbc(prob, gap, time_limit)


def _highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def _silence_highs_banner() -> None:
    """HiGHS prints a banner on stdout when the first solver object is made; make that one with stdout closed,
    so that `--json` output stays clean."""
    import highspy

    if getattr(_silence_highs_banner, "done", False):
        return
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _silence_highs_banner.done = True


# Seeded, so that identical inputs give identical plans. Rows are held to 1e-9 (capacities are checked again
# when the plan is priced); integrality keeps HiGHS's default 1e-6: below it (1e-7 to 1e-9 alike) HiGHS 1.16's
# MIP presolve (strengthenInequalities) can loop forever, ignoring the time limit, as it did on a fixed-fleet
# placement of a rag-docs scenario that solves in 1.2 s at 1e-6. Solutions are rounded to whole numbers anyway.
HIGHS_OPTIONS = {"random_seed": 0, "primal_feasibility_tolerance": 1e-9, "mip_feasibility_tolerance": SOLVER_TOLERANCE}


class _StartedHiGHS(pulp.HiGHS):
    """PuLP's HiGHS interface, handing the solver a starting plan (PuLP's own warm start is CMD-only)."""

    def __init__(self, start: dict | None, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def callSolver(self, lp):
        import highspy

        if self.start:
            solution = highspy.HighsSolution()
            solution.col_value = [self.start.get(v.name) or 0.0 for v in lp.variables()]
            solution.value_valid = True
            lp.solverModel.setSolution(solution)
        lp.solverModel.run()


def _solve_highs(prob: pulp.LpProblem, gap: float, time_limit: float | None,
                 start: dict | None = None, method: str = "choose") -> tuple[str, float | None]:
    import highspy

    _silence_highs_banner()
    prob.solve(_StartedHiGHS(start, msg=False, gapRel=gap, gapAbs=1e-9, timeLimit=time_limit, solver=method,
                             **HIGHS_OPTIONS))
    model = prob.solverModel
    status = model.getModelStatus()
    info = model.getInfo()
    S = highspy.HighsModelStatus
    has_solution = info.primal_solution_status == 2
    if status == S.kOptimal:
        bound = info.mip_dual_bound if model.getLp().integrality_ else info.objective_function_value
        return "optimal", float(bound) if np.isfinite(bound) else pulp.value(prob.objective)
    if status in (S.kInfeasible, S.kUnboundedOrInfeasible):
        return "infeasible", None
    if status == S.kTimeLimit:
        bound = info.mip_dual_bound
        return ("time_limit" if has_solution else "not_solved"), (float(bound) if np.isfinite(bound) else None)
    if has_solution:
        return "feasible", float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else None
    return "not_solved", None


_CBC_BOUND = re.compile(r"best possible[:\s]+(-?[\d.]+(?:e[-+]?\d+)?)", re.IGNORECASE)


def _solve_cbc(prob: pulp.LpProblem, gap: float, time_limit: float | None,
               warm: bool = False) -> tuple[str, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "cbc.log"
        prob.solve(pulp.PULP_CBC_CMD(msg=False, gapRel=gap, timeLimit=time_limit, logPath=str(log_path),
                                     warmStart=warm, options=["randomSeed 1", "randomCbcSeed 1"]))
        text = log_path.read_text() if log_path.exists() else ""
    if prob.status == pulp.LpStatusInfeasible:
        return "infeasible", None
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return "not_solved", None
    objective = pulp.value(prob.objective)
    bounds = _CBC_BOUND.findall(text)
    bound = float(bounds[-1]) if bounds else -np.inf
    if prob.sol_status == pulp.LpSolutionOptimal:
        # CBC proved the gap tolerance, which bounds the optimum even where its log printed no bound
        return "optimal", min(max(bound, objective - gap * abs(objective)), objective)
    return "time_limit", (min(bound, objective) if np.isfinite(bound) else None)
