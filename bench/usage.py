"""How full a written plan's fleet is: GPU, attached storage and path bandwidth, from the planner's own functions.

The plan is read back and re-priced as `kvplan evaluate` does (planner.plan.files: its decisions on the model of
the inputs it carries, priced by `costmodel.evaluate`): the stored GB and path GB/s per context are the model's, and the capacities are the
`Fleet`'s per-instance ones (MODEL.md §5: cache fractions and utilization_max included). So a row that binds
reads 1.0 here, whatever the formulas become. GPU utilisation is plan.json's `gpu_utilization_peak` (load over
the instances' GPUs, so at most utilization_max, 0.8 by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.costmodel import PATH_BLOCK, PATH_NETWORK
from planner.plan.files import reprice, saved_placement

ATTACHED = ("hbm", "host_memory", "local_nvme")


@dataclass(frozen=True)
class Usage:
    """Use over capacity of one plan's fleet; None where the fleet has no such capacity (or per_use mode)."""
    gpu_peak: float | None                  # the largest pool's peak GPU utilisation (plan.json)
    storage: dict[str, float | None] = field(default_factory=dict)      # kind: stored GB / the fleet's capacity
    storage_max: dict[str, float | None] = field(default_factory=dict)  # kind: the fullest offering's share
    path: dict[str, float | None] = field(default_factory=dict)  # network / block: the busiest offering's share


def _ratio(use: float, capacity: float) -> float | None:
    return float(use / capacity) if capacity > 0 else (None if use == 0 else float("inf"))


def usage(workload_file: Path, catalog: str, plan_dir: Path) -> Usage:
    """The utilisation of the plan written in plan_dir (plan.json, contexts.csv) for that workload and catalog."""
    plan = json.loads((plan_dir / "plan.json").read_text())
    peaks = [row["gpu_utilization_peak"] for row in plan["fleet"] if "gpu_utilization_peak" in row]
    gpu_peak = max(peaks) if peaks else None
    if plan["mode"] != "provisioned":
        return Usage(gpu_peak)
    # the plan re-priced from the inputs it carries, by the planner's own reading of plan files
    model, priced = reprice(plan, str(plan_dir / "plan.json"))
    placement = saved_placement(plan, str(plan_dir / "plan.json"), model)
    F, T = model.fleet, model.tiers
    G = len(F.names)
    instances, hbm = placement.instances, placement.hbm_cache
    o = priced.options
    kinds = np.asarray(T.kinds, dtype=object)[o.t]
    capacity = {"hbm": F.hbm_cache_gb * hbm, "host_memory": F.host_cache_gb, "local_nvme": F.nvme_cache_gb}
    storage, storage_max = {}, {}
    for kind in ATTACHED:
        on = kinds == kind
        used = np.bincount(o.g[on], o.stored_gb[on], G)
        cap = np.nan_to_num(capacity[kind]) * instances
        storage[kind] = _ratio(used.sum(), cap.sum())
        shares = [_ratio(used[g], cap[g]) for g in np.flatnonzero(instances)]
        shares = [s for s in shares if s is not None]
        storage_max[kind] = max(shares) if shares else None
    path = {}
    for name, code, cap_per in (("network", PATH_NETWORK, F.network_cap_gbs), ("block", PATH_BLOCK, F.block_cap_gbs)):
        on = T.path[o.t] == code
        used = np.bincount(o.g[on], o.path_gbs[on], G)
        shares = [_ratio(used[g], np.nan_to_num(cap_per[g]) * instances[g]) for g in np.flatnonzero(instances)]
        shares = [s for s in shares if s is not None]
        path[name] = max(shares) if shares else None
    return Usage(gpu_peak, storage, storage_max, path)
