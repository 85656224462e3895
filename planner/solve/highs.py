"""The solver layer under every program kvplan builds: HiGHS (through PuLP, or highspy directly) with CBC as the
fallback, the fleet-first steps, and the tolerances a solver's values are rounded with.

HiGHS is seeded (HIGHS_OPTIONS), so that identical inputs give identical plans.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pulp

from ..inputs.errors import log

# The solver's integrality tolerance: an integer variable within it of a whole number counts as that number, so
# a background share x_j <= n_g can be up to this much on an offering with no instance. Shares within it are zero
# (MODEL.md §5, linking): in the solver's rounding (`shares`) and when a priced plan is checked alike.
SOLVER_TOLERANCE = 1e-6


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
                incumbent: dict | None = None, placement: str | None = None) -> Solved:
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
    `placement`: the name of the variables step 1 relaxes; where step 1's are already integral and within `gap`
    of its bound, that solution is a plan of the whole program and is returned without step 2.
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
                return solve_highs(prob, gap_, remaining(), start_)
            except Exception as exc:  # a broken HiGHS install or a crash inside it: CBC still gives a plan
                log.warning("HiGHS failed (%s: %s); falling back to CBC", type(exc).__name__, exc)
                solver = "cbc"
        return solve_cbc(prob, gap_, remaining(), warm=start_ is not None)

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
            objective = pulp.value(relaxed.objective)
            if (placement is not None and _integral(relaxed_var[placement])
                    and objective - bound <= gap * abs(objective)):
                return Solved("optimal", relaxed, relaxed_var, objective, bound, solver)  # already a plan
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


def _integral(variables) -> bool:
    """Whether every one of these solved variables is within SOLVER_TOLERANCE of an integer."""
    values = np.array([value(v) for v in variables])
    return bool(np.all(np.abs(values - np.round(values)) <= SOLVER_TOLERANCE))


def value(v) -> float:
    return 0.0 if v is None or v.varValue is None else float(v.varValue)


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
        return solve_highs(prob, gap, time_limit, method="ipm" if interior_point else "choose")
    return solve_cbc(prob, gap, time_limit)


def _highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def silence_highs_banner() -> None:
    """HiGHS prints a banner on stdout when the first solver object is made; make that one with stdout closed,
    so that `--json` output stays clean."""
    import highspy

    if getattr(silence_highs_banner, "done", False):
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
    silence_highs_banner.done = True


# Seeded, so that identical inputs give identical plans. Rows are held to 1e-9 (capacities are checked again
# when the plan is priced); integrality keeps HiGHS's default, SOLVER_TOLERANCE: below it HiGHS 1.16's MIP
# presolve (strengthenInequalities) can loop forever, ignoring the time limit. Solutions are rounded anyway.
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


def solve_highs(prob: pulp.LpProblem, gap: float, time_limit: float | None,
                 start: dict | None = None, method: str = "choose") -> tuple[str, float | None]:
    import highspy

    silence_highs_banner()
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


def solve_cbc(prob: pulp.LpProblem, gap: float, time_limit: float | None,
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
