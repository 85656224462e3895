"""Sweeps: every scenario planned in full, on this machine's cores (a process pool); the results table, its
quantiles and what the cost is most sensitive to.

Each scenario is an independent plan (MODEL.md §5 on that scenario's workload and catalog). Rows carry the
scenario's parameters, total, breakdown, fleet, tiers and status; a sweep whose results file already holds some
scenarios plans only the others (resume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import pandas as pd

from ..inputs.errors import Infeasible, InputError
from .scenarios import Base, Scenario, apply

BREAKDOWN = ("compute", "storage", "network", "requests")
RESULT_COLUMNS = ("status", "reason", "catalog", "total_usd", *(f"{k}_usd" for k in BREAKDOWN), "gap", "fleet",
                  "tiers")


def plan_scenario(b: Base, scenario: Scenario, gap: float, time_limit: float | None) -> dict:
    """One scenario planned: a results row (never raises for an infeasible or bad scenario: its status says)."""
    from ..inputs.catalog import load_models
    from ..plan.runner import make_plan

    row: dict = {"scenario": scenario.id, **{f"p.{k}": _cell(v) for k, v in scenario.parameters.items()}}
    try:
        workload, catalog = apply(b, scenario, load_models())
        plan = make_plan(workload, catalog, gap=gap, time_limit=time_limit, baselines=False)
    except Infeasible as exc:
        return {**row, "status": "infeasible", "reason": str(exc).splitlines()[0]}
    except InputError as exc:
        return {**row, "status": "bad_input", "reason": str(exc)}
    fleet = " + ".join(f"{f['instances']}x {f['offering']}" for f in plan["fleet"] if f["instances"])
    tiers = ", ".join(f"{t['tier']} {t['contexts']}" for t in plan["tiers"] if t["contexts"])
    return {**row, "status": plan["solver"]["status"], "reason": "", "catalog": catalog.name,
            "total_usd": plan["total_usd"], **{f"{k}_usd": plan["breakdown_usd"][k] for k in BREAKDOWN},
            "gap": plan["solver"]["gap"], "fleet": fleet, "tiers": tiers}


def _cell(value):
    """Parameter values as table cells: mappings and lists (per-GPU scales, catalog entries) as JSON text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


_WORKER: dict = {}


def _init(b: Base, gap: float, time_limit: float | None) -> None:
    _WORKER.update(base=b, gap=gap, time_limit=time_limit)   # shipped once per worker, not per scenario


def _run(scenario: Scenario) -> dict:
    return plan_scenario(_WORKER["base"], scenario, _WORKER["gap"], _WORKER["time_limit"])


def run_local(b: Base, scenarios: list[Scenario], workers: int, gap: float, time_limit: float | None,
              done: Callable[[dict], None]) -> None:
    """Plan the scenarios on `workers` processes (1: in this process); `done(row)` as each finishes."""
    if workers <= 1:
        for scenario in scenarios:
            done(plan_scenario(b, scenario, gap, time_limit))
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(b, gap, time_limit)) as pool:
        futures = [pool.submit(_run, scenario) for scenario in scenarios]
        for future in as_completed(futures):
            done(future.result())


def run_ray(address: str, b: Base, scenarios: list[Scenario], gap: float, time_limit: float | None,
            done: Callable[[dict], None]) -> None:
    """Plan the scenarios as tasks on an existing Ray cluster: the base (workload and catalog) shipped once to the
    object store, results streamed back as they finish, a task whose worker is lost run again (up to 3 times)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray", "Ray is not installed: pip install 'kvplan[ray]'") from None
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        task = ray.remote(max_retries=3)(plan_scenario)
        shared = ray.put(b)
        pending = [task.remote(shared, scenario, gap, time_limit) for scenario in scenarios]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            done(ray.get(finished[0]))
    finally:
        ray.shutdown()


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


def ordered(rows: Iterable[dict], scenarios: list[Scenario]) -> pd.DataFrame:
    """The rows as a table in the scenarios' order (whatever order they finished in)."""
    position = {s.id: i for i, s in enumerate(scenarios)}
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    frame = frame.assign(_order=frame["scenario"].map(position)).sort_values("_order", kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    parameters = sorted(c for c in frame.columns if c.startswith("p."))
    frame = frame[["scenario", *parameters, *[c for c in RESULT_COLUMNS if c in frame.columns]]]
    for column in [c for c in frame.columns if c.startswith("p.")]:  # a column of numbers and text: all text
        if frame[column].map(lambda v: isinstance(v, str)).any():
            frame[column] = frame[column].map(lambda v: "" if v is None or v != v else str(v))
    return frame


# --- summary --------------------------------------------------------------------------------------------------

QUANTILES = (0.1, 0.5, 0.9)


def sweep_summary(frame: pd.DataFrame) -> dict:
    """P10/P50/P90 of the monthly total over the scenarios that have a plan (each quantile an actual scenario:
    its fleet and tiers), and a tornado: for each parameter that varies, the total's swing across it."""
    ok = frame[frame["total_usd"].notna()] if "total_usd" in frame else frame.iloc[0:0]
    out = {"scenarios": int(len(frame)), "planned": int(len(ok)),
           "not_planned": {str(k): int(v) for k, v in frame.loc[~frame.index.isin(ok.index), "status"]
                           .value_counts().items()} if "status" in frame else {},
           "unproven": {"scenarios": 0, "largest_gap": None}, "quantiles": [], "tornado": []}
    if ok.empty:
        return out
    # plans the solver stopped before proving them within the gap (e.g. at the time limit): their totals are upper
    # bounds of those scenarios' optima, so the quantiles may sit that much high
    unproven = ok[ok["status"] != "optimal"]
    if len(unproven):
        out["unproven"] = {"scenarios": int(len(unproven)), "largest_gap": float(unproven["gap"].max())}
    totals = ok["total_usd"].to_numpy(float)
    order = np.argsort(totals, kind="stable")
    for q in QUANTILES:
        index = order[min(int(np.ceil(q * len(order))) - 1, len(order) - 1) if q > 0 else 0]  # inverted CDF
        row = ok.iloc[int(index)]
        out["quantiles"].append({"quantile": q, "total_usd": float(row["total_usd"]), "scenario": row["scenario"],
                                 "fleet": row["fleet"], "tiers": row["tiers"]})
    for column in [c for c in ok.columns if c.startswith("p.")]:
        values = ok[column]
        if values.nunique(dropna=True) < 2:
            continue
        # a drawn number, over the scenarios that set it to a number (named ones may leave it out, or set a
        # mapping such as a factor per GPU): lowest vs highest tenth
        present = values[values.notna() & (values != "")]
        numeric = pd.to_numeric(present, errors="coerce").dropna()
        if len(numeric) >= 0.8 * len(present) and numeric.nunique() > 5:
            total = ok.loc[numeric.index, "total_usd"]
            low = total[numeric <= numeric.quantile(0.1)].mean()
            high = total[numeric >= numeric.quantile(0.9)].mean()
            rho = float(total.rank().corr(numeric.rank()))  # Spearman's ρ: Pearson's on the ranks (no SciPy)
            out["tornado"].append({"parameter": column[2:], "low": "lowest 10%", "high": "highest 10%",
                                   "total_low_usd": float(low), "total_high_usd": float(high),
                                   "swing_usd": float(abs(high - low)), "spearman": rho})
        else:                                               # a few values: the cheapest and dearest by mean
            labels = values.map(lambda v: "(not set)" if v is None or v != v or v == "" else str(v))
            means = ok.groupby(labels)["total_usd"].mean().sort_values()
            out["tornado"].append({"parameter": column[2:], "low": means.index[0], "high": means.index[-1],
                                   "total_low_usd": float(means.iloc[0]), "total_high_usd": float(means.iloc[-1]),
                                   "swing_usd": float(means.iloc[-1] - means.iloc[0]), "spearman": None})
    out["tornado"].sort(key=lambda t: -t["swing_usd"])
    return out
