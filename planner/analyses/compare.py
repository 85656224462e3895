"""Plan one workload on several catalogs and line the plans up, cheapest first."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..inputs.catalog import ModelCard, load_catalog
from ..inputs.errors import Infeasible
from ..inputs.workload import Workload
from ..plan.runner import make_plan

COLUMNS = ("catalog", "provider", "region", "as_of", "status", "total_usd", "compute_usd", "storage_usd",
           "network_usd", "requests_usd", "fleet", "tiers", "all_recompute_usd", "savings_usd", "savings_ratio",
           "gap", "reason")


def compare(workload: Workload, catalogs: list[str], models: dict[str, ModelCard], *, pricing: str | None = None,
            solver: str = "highs", gap: float = 1e-4, time_limit: float | None = None,
            progress: Callable[[str], None] = lambda message: None) -> list[dict]:
    """One row per catalog: the plan's total and breakdown, fleet and tiers, and its saving against recomputing
    everything; a catalog that cannot serve the workload gets a row saying why. Cheapest first."""
    if pricing is not None:
        workload = dataclasses.replace(workload, pricing=pricing)
    rows = []
    for ref in catalogs:
        catalog = load_catalog(ref, models)
        row = {key: None for key in COLUMNS} | {"catalog": catalog.name, "provider": catalog.provider,
                                                  "region": catalog.region, "as_of": catalog.as_of}
        progress(f"{catalog.name}: planning...")
        try:
            plan = make_plan(workload, catalog, solver=solver, gap=gap, time_limit=time_limit,
                             baselines=("all_recompute",))
        except Infeasible as exc:
            rows.append(row | {"status": "infeasible", "reason": str(exc).splitlines()[0].rstrip(":")})
            continue
        baseline = plan["baselines"]["all_recompute"]
        row |= {
            "status": plan["solver"]["status"], "total_usd": plan["total_usd"],
            **{f"{key}_usd": value for key, value in plan["breakdown_usd"].items()},
            "fleet": " + ".join(f"{f['instances']}x {f['offering']}" + (f" (tp {f['tp']})" if f["gpus"] > 1 else "")
                                for f in plan["fleet"] if f["instances"])
            or "per use: " + ", ".join(f["offering"] for f in plan["fleet"]),
            "tiers": ", ".join(f"{t['tier']} {t['contexts']}" for t in plan["tiers"] if t["contexts"]),
            "all_recompute_usd": baseline["total_usd"], "savings_usd": baseline.get("savings_usd"),
            "savings_ratio": baseline.get("savings_ratio"), "gap": plan["solver"]["gap"],
            "reason": None if baseline["feasible"] else f"all-recompute: {baseline['reason']}",
        }
        rows.append(row)
        progress(f"{catalog.name}: ${plan['total_usd']:,.2f} per month")
    return sorted(rows, key=lambda r: (r["total_usd"] is None, r["total_usd"] or 0.0, r["catalog"]))
