"""Optimality: on random tiny instances the plan's total equals the best of a brute-force enumeration of every
placement, every HBM-cache state and the cheapest fleet for each (MODEL.md §5, §6; gap 1e-9)."""

import itertools

import numpy as np
import pytest

from planner.costmodel import PATH_BLOCK, PATH_NETWORK, grid
from planner.inputs.catalog import load_models
from planner.plan.options import prepare
from planner.plan.runner import make_plan

MODELS = load_models()


def brute_force(workload, catalog):
    """The cheapest total over every placement, HBM-cache state per offering and the least fleet for each."""
    model = prepare(workload, catalog)
    F, T, H = model.fleet, model.tiers, workload.hours_per_month
    G = len(F.names)
    o = model.options(*grid(len(model.demand.count), G, len(T.names)))
    per_context = [np.flatnonzero((o.k == k) & o.allowed) for k in model.context_class]
    if any(len(rows) == 0 for rows in per_context):
        return None
    if workload.mode == "per_use":
        return sum(o.direct_usd[rows].min() for rows in per_context)
    kinds = np.asarray(T.kinds, dtype=object)
    rows_cap = [(o.gpu_load, np.ones(len(o.k), bool), F.gpu_capacity),
                (o.stored_gb, kinds[o.t] == "hbm", F.hbm_cache_gb),
                (o.stored_gb, kinds[o.t] == "host_memory", F.host_cache_gb),
                (o.stored_gb, kinds[o.t] == "local_nvme", F.nvme_cache_gb),
                (o.path_gbs, T.path[o.t] == PATH_NETWORK, F.network_cap_gbs),
                (o.path_gbs, T.path[o.t] == PATH_BLOCK, F.block_cap_gbs)]
    best = None
    for h in itertools.product((0, 1), repeat=G):
        h = np.array(h)
        choices = [rows[o.c[rows] == h[o.g[rows]]] for rows in per_context]
        if any(len(c) == 0 for c in choices):
            continue
        for combo in itertools.product(*choices):
            combo = np.array(combo)
            n = np.zeros(G)
            n[np.unique(o.g[combo])] = 1
            for use, selected, capacity in rows_cap:
                pick = combo[selected[combo]]
                total = np.bincount(o.g[pick], use[pick], G)
                with np.errstate(divide="ignore", invalid="ignore"):
                    need = np.where(total > 0, np.ceil(total / np.nan_to_num(capacity) - 1e-9), 0)
                n = np.maximum(n, need)
            caps = np.full(F.offering.max() + 1, np.inf)
            caps[F.offering] = F.max_instances      # an offering's cap holds for its tp versions together
            if np.any(~np.isfinite(n)) or np.any(np.bincount(F.offering, n, len(caps)) > caps):
                continue
            cost = float(n @ (F.price * H) + o.direct_usd[combo].sum())
            best = cost if best is None else min(best, cost)
    return best


CASES = [(seed, mode) for seed in range(24) for mode in ("provisioned",)] + [(100 + s, "per_use") for s in range(6)]


@pytest.mark.parametrize("seed,mode", CASES)
def test_plan_equals_brute_force(seed, mode, random_instance):
    rng = np.random.default_rng(seed)
    n_contexts = int(rng.integers(1, 7))
    n_offerings = int(rng.integers(1, 4))
    n_tiers = int(rng.integers(1, 5))
    if n_contexts > 4:  # keep the enumeration small: (offerings × (tiers + 1))^contexts × 2^offerings
        n_offerings, n_tiers = min(n_offerings, 2), min(n_tiers, 2)
    workload, catalog = random_instance(rng, n_contexts, n_offerings, n_tiers, mode)
    expected = brute_force(workload, catalog)
    if expected is None:
        with pytest.raises(Exception, match="cannot meet their SLO|no plan|max_instances"):
            make_plan(workload, catalog, gap=1e-9, baselines=False)
        return
    try:
        plan = make_plan(workload, catalog, gap=1e-9, baselines=False)
    except Exception as exc:  # only a capacity-capped instance may have no plan, and brute force agrees
        pytest.fail(f"no plan, brute force found ${expected:.6f}: {exc}")
    assert plan["violations"] == []
    assert plan["total_usd"] == pytest.approx(expected, rel=1e-7, abs=1e-6)
    assert plan["solver"]["status"] == "optimal"


def test_some_instances_use_every_kind_of_decision(random_instance):
    """The random family is not trivial: across it, plans use several tiers, several offerings and HBM caches."""
    tiers, offerings, cached = set(), set(), False
    for seed, mode in CASES[:24]:
        rng = np.random.default_rng(seed)
        n_contexts, n_offerings, n_tiers = int(rng.integers(1, 7)), int(rng.integers(1, 4)), int(rng.integers(1, 5))
        if n_contexts > 4:
            n_offerings, n_tiers = min(n_offerings, 2), min(n_tiers, 2)
        workload, catalog = random_instance(rng, n_contexts, n_offerings, n_tiers, mode)
        try:
            plan = make_plan(workload, catalog, gap=1e-9, baselines=False)
        except Exception:
            continue
        tiers |= {c["tier"] for c in plan["contexts"]}
        offerings.add(len(plan["fleet"]))
        cached |= any(f["hbm_cache"] for f in plan["fleet"])
    assert len(tiers) >= 4 and max(offerings) >= 2 and cached
