"""From a workload and a catalog to a priced plan with its baselines (MODEL.md §5, §6, §8).

A plan is computed in three steps: the option table (plan.options), the program (the exact one of solve.exact,
or the scale engine of solve.scale for many contexts), and pricing (plan.pricing): the chosen option of every
context is priced again by costmodel.evaluate, and those numbers, not the solver's objective, are the plan's.
Each baseline is the cheapest plan under its own restriction; where a program has no plan, the diagnosis says
which contexts, capacities or caps are why.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from ..costmodel import RECOMPUTE, Options, grid
from ..inputs.catalog import Catalog
from ..inputs.errors import Infeasible
from ..inputs.workload import Workload
from ..solve.exact import Solution, solve_program
from .files import to_json
from .options import (Model, background_table, baseline_masks, best_effort, drop_dominated, option_table, prepare,
                      problem_of)
from .pricing import Placement, Priced, placement_from, price, settled


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


@dataclasses.dataclass(frozen=True)
class UnmetSlo:
    """Contexts no option of a catalog serves within their SLO (at any tensor-parallel size)."""
    contexts: int
    requests_per_month: float
    worst: str          # the context furthest off, its best TTFT and where


def unmet_slo(workload: Workload, catalog: Catalog) -> UnmetSlo:
    """How many contexts (and their reuses a month) meet their SLO on no offering of the catalog."""
    model = prepare(workload, catalog)
    table = option_table(model)
    classes = np.setdiff1d(np.arange(len(model.demand.count)), table.k[table.allowed])
    if len(classes) == 0:
        return UnmetSlo(0, 0.0, "")
    count = model.demand.count[classes]
    requests = float(np.sum(count * model.demand.reuses_per_month[classes]))
    best = np.full(len(classes), np.inf)
    where = np.full(len(classes), -1)
    for i, k in enumerate(classes):
        rows = np.flatnonzero((table.k == k) & table.available)
        if len(rows):
            j = rows[np.argmin(table.ttft_s[rows])]
            best[i], where[i] = table.ttft_s[j], j
    off = best / model.demand.ttft_slo_s[classes]
    i = int(np.argmax(np.where(np.isfinite(off), off, -np.inf))) if np.isfinite(off).any() else 0
    k = classes[i]
    context = model.workload.contexts["id"].to_numpy()[model.context_class == k][0]
    worst = (f"{context}: best TTFT {best[i]:.3f} s with {model.tiers.names[table.t[where[i]]]} on "
             f"{model.fleet.names[table.g[where[i]]]}, SLO {model.demand.ttft_slo_s[k]:g} s"
             if where[i] >= 0 else f"{context}: no offering can serve it at all")
    return UnmetSlo(int(count.sum()), requests, worst)


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
        return "no offering can serve the model: " + "; ".join(F.reasons(model.workload.pricing))
    return "its KV cache leaves no room for a decode batch on any GPU"


def solve_restricted(model: Model, table: Options, background: Options, keep: np.ndarray, *, solver: str,
                     gap: float, time_limit: float | None) -> tuple[Placement | None, Solution | None, str]:
    """Cheapest plan using only the options in `keep`; (None, None, why) when no plan exists."""
    options = drop_dominated(table.take(keep & table.allowed), model.tiers)
    missing = np.setdiff1d(np.arange(len(model.demand.count)), options.k)
    if len(missing):
        return None, None, f"{model.demand.count[missing].sum()} contexts meet no SLO this way"
    if len(model.background.count) and not background.allowed.any():
        return None, None, "background traffic cannot meet the SLO on any offering"
    problem = problem_of(model, options, background.take(background.allowed))
    solution = solve_program(problem, solver=solver, gap=gap, time_limit=time_limit)
    if not solution.has_plan:
        return None, solution, f"solver: {solution.status}"
    return placement_from(model, problem, solution), solution, ""


def silent(message: str) -> None:
    """A progress callback that says nothing."""


METHODS = ("auto", "exact", "scale")
SCALE_CLASSES = 2000  # method auto: above this many context classes, the scale engine (solve/scale.py)


def make_plan(workload: Workload, catalog: Catalog, *, solver: str = "highs", gap: float = 1e-4,
              time_limit: float | None = None, baselines: bool | tuple[str, ...] = True,
              progress: Callable[[str], None] = silent, timing: bool = False, budget: float | None = None,
              method: str = "auto", slo_policy: str | None = None) -> dict:
    """Plan a workload on a catalog: the cheapest placement and fleet within SLO, priced, with baselines
    (all of them, none, or those named). `method`: exact (one program over every class and option), scale
    (solve/scale.py: per-context plans for many contexts, with a proven bound), or auto (scale above
    SCALE_CLASSES classes). `slo_policy` overrides the workload's (MODEL.md §5: strict, or best_effort: contexts
    that can meet their SLO nowhere take their fastest option and are listed under slo_misses). Identical inputs
    give identical plans; the solver's wall time, which does not repeat, is recorded only with `timing`."""
    if slo_policy is not None:
        workload = dataclasses.replace(workload, slo_policy=slo_policy)
    model = prepare(workload, catalog)
    if not model.fleet.serves.any():
        raise Infeasible(f"no offering of {catalog.name} can serve {model.card.name}: "
                         f"{'; '.join(model.fleet.reasons(workload.pricing))}")
    held = {"model": model}  # a best-effort solver replaces it with the model its plan is priced on
    if method == "scale" or (method == "auto" and len(model.demand.count) > SCALE_CLASSES):
        restricted, names = _scale_solver(held, gap, time_limit, progress), baseline_names(model)
    else:
        restricted, names = _exact_solver(held, solver, gap, time_limit, progress)
    placement, solution, reason = restricted(None)
    if placement is None and method == "auto" and solution is not None and solution.status == "not_solved":
        progress("the exact program found no plan within the time limit: the engine plans instead")
        restricted, names = _scale_solver(held, gap, time_limit, progress), baseline_names(held["model"])
        placement, solution, reason = restricted(None)
    if placement is None:
        raise Infeasible(reason)
    model = held["model"]
    if len(model.best_effort):
        progress(f"{int(model.demand.count[model.best_effort].sum())} context(s) meet their SLO nowhere: planned "
                 "best-effort at their fastest option (slo_misses)")
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


def _exact_solver(held: dict, solver: str, gap: float, time_limit: float | None,
                  progress: Callable[[str], None]):
    """The exact program: (solve(restriction name or None), baseline names)."""
    model = held["model"]
    table = option_table(model)
    background = background_table(model)
    progress(f"{len(model.demand.count)} context classes, {int(table.allowed.sum())} options within SLO")
    unplaceable = np.setdiff1d(np.arange(len(model.demand.count)), table.k[table.allowed])
    if len(unplaceable) and model.workload.slo_policy == "best_effort":
        model = held["model"] = best_effort(model, unplaceable)
        table = option_table(model)
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


def _scale_solver(held: dict, gap: float, time_limit: float | None, progress: Callable[[str], None]):
    """The scale engine (solve/scale.py); baselines are the same restrictions, per class and tier."""
    from ..solve import scale

    model = held["model"]
    inputs = scale.Inputs(model.card, model.fleet, model.tiers, model.settings)
    K, T = len(model.demand.count), len(model.tiers.names)
    stored = np.arange(T) != RECOMPUTE
    # Each offering at its smallest tp alone: the engine plans there too, and the cheaper plan is kept (a plan on
    # fewer pools is a plan); the bound is always the one over every pool.
    smallest = model.fleet.smallest_tp()
    narrow = (scale.Inputs(model.card, model.fleet.subset(smallest), model.tiers, model.settings)
              if len(smallest) < len(model.fleet.names) else None)

    def widened(result):
        """A result on the smallest-tp pools, on every pool."""
        def wide(values: np.ndarray) -> np.ndarray:
            out = np.zeros(len(model.fleet.names), dtype=values.dtype)
            out[smallest] = values
            return out
        return dataclasses.replace(result, offering=smallest[result.offering], instances=wide(result.instances),
                                   hbm_cache=wide(result.hbm_cache),
                                   background_share=wide(result.background_share))

    def solve(name, states, allowed, tree, talk):
        result = scale.solve(inputs, model.demand, model.background, states=states, allowed=allowed, gap=gap,
                             time_limit=time_limit, tree=tree, progress=talk)
        if narrow is None or result.status == "unplaceable":
            return result
        other = scale.solve(narrow, model.demand, model.background, states=states, allowed=allowed, gap=gap,
                            time_limit=time_limit, tree=False, progress=silent)
        if other.objective is None or (result.objective is not None and other.objective >= result.objective):
            return result
        talk(f"the plan on each offering's smallest tp is cheaper: ${other.objective:,.2f}")
        return dataclasses.replace(widened(other), bound=result.bound, status=result.status)

    def restricted(name: str | None):
        nonlocal model
        states, allowed = (0, 1), None
        if name == "all_recompute":
            states, allowed = (0,), np.broadcast_to(~stored, (K, T)).copy()
        elif name == "rule_of_thumb":
            wants_store = model.demand.reuses_per_month > model.workload.hours_per_month
            allowed = stored[None, :] == wants_store[:, None]
        elif name is not None:
            allowed = np.broadcast_to(np.arange(T) == model.tiers.index(name), (K, T)).copy()
        result = solve(name, states, allowed, name is None,  # a baseline's bound is not shown
                       progress if name is None else silent)
        if result.status == "unplaceable" and name == "rule_of_thumb" and len(result.unplaceable):
            allowed[result.unplaceable] = True  # where the rule's choice meets no SLO, the other one
            result = solve(name, (0, 1), allowed, False, silent)
        if result.status == "unplaceable" and name is None and model.workload.slo_policy == "best_effort":
            model = held["model"] = best_effort(model, result.unplaceable)
            result = solve(name, states, allowed, True, progress)
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
