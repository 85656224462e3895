"""Why a plan chose what it chose: every option of one context, and what each capacity of the fleet is worth.

The cost of an option with GPU time at full price is its direct cost plus the GPU time it takes at its instance's
monthly price per unit of GPU capacity: what it costs where it needs instances of its own. The cost of an option at
the margin (what placing this one context there adds to the month, the rest of the plan unchanged) is its direct
cost (storage, network, requests; GPU time in per_use mode) plus its GPU time at the
margin: free on a rented offering whose GPUs have room for it, else at the price of the capacity it needs
(the instance's monthly price per unit of its GPU capacity). An option whose attached tier (HBM, host memory,
NVMe) or path is full on the plan's fleet needs the fleet changed: that is the capacity that forced the choice. (A
rented offering's options are in its HBM-cache state: its HBM tier is not available where it keeps no cache.)

Every option's direct cost and GPU time are linear in the context's reuse rate f (reuses per month); its cost at
the margin jumps where its GPU time outgrows the room on its offering. The choice flips at the nearest rate where
an option that needs no change of fleet costs less at the margin: found on a fine grid, then by bisection. SLO
verdicts do not depend on f.

`resolved_total` re-solves the whole plan with the context forced to one option (the exact program, so for plans
of at most SCALE_CLASSES context classes): the check of the margin above, and of the plan's optimality.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..costmodel import PATH_BLOCK, PATH_NETWORK, Demand, Options, evaluate
from ..inputs.errors import InputError
from ..plan.options import Model, background_table, drop_dominated, option_table, problem_of
from ..plan.pricing import Placement, Priced, carrying_background, price
from ..plan.runner import SCALE_CLASSES, solve_restricted
from ..solve.exact import build
from ..solve.highs import solve_once

SLACK = 1e-6          # a row counts as full above (1 − SLACK) of its capacity
RESOURCES = ("gpu", "hbm_gb", "host_gb", "nvme_gb", "network_gbs", "block_gbs")


def _usage(model: Model, placement: Placement, priced: Priced) -> tuple[np.ndarray, np.ndarray]:
    """Per offering and resource (RESOURCES): what the plan uses and what its fleet provides."""
    F, T = model.fleet, model.tiers
    G = len(F.names)
    o, n = priced.options, placement.instances.astype(float)
    kinds = np.asarray(T.kinds, dtype=object)[o.t]
    used, cap = np.zeros((G, 6)), np.zeros((G, 6))
    bg_g = carrying_background(placement.background_share)
    used[:, 0] = np.bincount(o.g, o.gpu_load, G) + np.bincount(bg_g, priced.background_share
                                                                * priced.background.gpu_load, G)
    for r, selected, amount in ((1, kinds == "hbm", o.stored_gb), (2, kinds == "host_memory", o.stored_gb),
                                (3, kinds == "local_nvme", o.stored_gb), (4, T.path[o.t] == PATH_NETWORK, o.path_gbs),
                                (5, T.path[o.t] == PATH_BLOCK, o.path_gbs)):
        used[:, r] = np.bincount(o.g[selected], amount[selected], G)
    per_instance = np.column_stack([F.gpu_capacity, F.hbm_cache_gb * placement.hbm_cache,
                                    np.nan_to_num(F.host_cache_gb), np.nan_to_num(F.nvme_cache_gb),
                                    np.nan_to_num(F.network_cap_gbs), np.nan_to_num(F.block_cap_gbs)])
    cap[:] = per_instance * n[:, None]
    return used, cap


def _resource_use(model: Model, o: Options) -> np.ndarray:
    """Per option: its use of each resource (RESOURCES)."""
    kinds = np.asarray(model.tiers.kinds, dtype=object)[o.t]
    use = np.zeros((len(o.k), 6))
    use[:, 0] = o.gpu_load
    use[:, 1] = np.where(kinds == "hbm", o.stored_gb, 0.0)
    use[:, 2] = np.where(kinds == "host_memory", o.stored_gb, 0.0)
    use[:, 3] = np.where(kinds == "local_nvme", o.stored_gb, 0.0)
    use[:, 4] = np.where(model.tiers.path[o.t] == PATH_NETWORK, o.path_gbs, 0.0)
    use[:, 5] = np.where(model.tiers.path[o.t] == PATH_BLOCK, o.path_gbs, 0.0)
    return use


def _context_index(model: Model, context_id: str) -> int:
    ids = model.workload.contexts["id"].astype(str).tolist()
    if context_id not in ids:
        raise InputError("--context", f"no context with id {context_id!r} in the plan")
    return ids.index(context_id)


def _options_of(model: Model, placement: Placement, i: int, rates: np.ndarray | None = None) -> Options:
    """Every (offering, tier) option of context i, at its own reuse rate or at each of `rates` (rows rate by rate);
    offerings in the plan's fleet in their HBM-cache state, others in the state the tier needs (a cache for the
    HBM tier)."""
    G, T = len(model.fleet.names), len(model.tiers.names)
    g, t = np.repeat(np.arange(G), T), np.tile(np.arange(T), G)
    hbm_tier = np.asarray(model.tiers.kinds, dtype=object)[t] == "hbm"
    c = np.where(placement.instances[g] > 0, placement.hbm_cache[g], hbm_tier.astype(np.int64))
    k = int(model.context_class[i])
    demand = model.demand
    if rates is not None:  # the context's class once per rate
        demand = Demand(**{name: np.repeat(getattr(demand, name)[[k]], len(rates))
                           for name in Demand.__dataclass_fields__})
        demand = dataclasses.replace(demand, reuses_per_month=np.asarray(rates, float))
        R = len(rates)
        return evaluate(model.card, model.fleet, model.tiers, demand, model.settings, np.repeat(np.arange(R), G * T),
                        np.tile(g, R), np.tile(t, R), np.tile(c, R))
    return evaluate(model.card, model.fleet, model.tiers, demand, model.settings, np.full(len(g), k), g, t, c)


def _gpu_usd(model: Model, o: Options) -> np.ndarray:
    """Each option's GPU time at its instance's monthly price per unit of GPU capacity (0 in per_use mode,
    where GPU time is in the direct cost)."""
    if model.settings.mode != "provisioned":
        return np.zeros(len(o.k))
    F = model.fleet
    with np.errstate(invalid="ignore"):
        return o.gpu_load * (np.nan_to_num(F.price) * model.settings.hours_per_month / F.gpu_capacity)[o.g]


def _marginal(model: Model, placement: Placement, o: Options, room: np.ndarray) -> np.ndarray:
    """Cost at the margin of each option (see the module's docstring); `room` (G, 6): capacity left."""
    fits_gpu = (placement.instances[o.g] > 0) & (o.gpu_load <= room[o.g, 0] + 1e-12)
    return o.direct_usd + np.where(fits_gpu, 0.0, _gpu_usd(model, o))


def context(model: Model, placement: Placement, priced: Priced, context_id: str) -> dict:
    """Every option of one context: TTFT, verdict, cost at the margin; the choice, why, and the reuse rate at
    which it would flip."""
    F, T = model.fleet, model.tiers
    i = _context_index(model, context_id)
    o = _options_of(model, placement, i)
    used, cap = _usage(model, placement, priced)
    mine = _resource_use(model, priced.options.take(np.array([i])))[0]
    room = cap - used
    room[placement.offering[i]] += mine                   # this context's own share is free to move
    use = _resource_use(model, o)
    marginal = _marginal(model, placement, o, room)
    gpu_usd = _gpu_usd(model, o)
    chosen = int(np.flatnonzero((o.g == placement.offering[i]) & (o.t == placement.tier[i]))[0])

    rented = placement.instances[o.g] > 0
    full = np.zeros(len(o.k), dtype=object)
    for r in range(1, 6):  # attached tiers and paths: room on the rented fleet, else the fleet must change
        over = rented & (use[:, r] > 0) & (use[:, r] > room[o.g, r] + 1e-9)
        full[over & (full == 0)] = RESOURCES[r]
    # node-priced tiers (in-memory services): room in the nodes the plan bought, else another node
    node_room = placement.nodes * np.nan_to_num(T.node_gb) - np.bincount(priced.options.t, priced.options.stored_gb
                                                                       * np.isfinite(T.node_gb)[priced.options.t],
                                                                       len(T.names))
    node_room[placement.tier[i]] += priced.options.stored_gb[i]
    gpu_fits = (placement.instances[o.g] > 0) & (o.gpu_load <= room[o.g, 0] + 1e-12)
    rows = []
    for j in range(len(o.k)):
        verdict = _verdict(model, o, j)
        needs = ""
        if verdict == "ok":
            if not rented[j] and model.settings.mode == "provisioned":
                needs = f"renting {F.names[o.g[j]]}"
            elif np.isfinite(T.node_gb[o.t[j]]) and o.stored_gb[j] > node_room[o.t[j]] + 1e-9:
                needs = f"another {T.names[o.t[j]]} node"
            elif full[j]:
                needs = f"more {full[j]} on {F.names[o.g[j]]} (full: {_amount(used[o.g[j], RESOURCES.index(full[j])])}"\
                        f" of {_amount(cap[o.g[j], RESOURCES.index(full[j])])})"
        rows.append({"offering": F.names[o.g[j]], "tp": int(F.tp[o.g[j]]), "tier": T.names[o.t[j]],
                     "ttft_s": float(o.ttft_s[j]), "load_s": float(o.load_s[j]),
                     "load_gpu_s": float(F.tp[o.g[j]] * o.load_s[j]) if F.load_blocks_gpu[o.g[j]] else 0.0,
                     "tpot_s": float(o.tpot_s[j]), "verdict": verdict, "usd_direct": float(o.direct_usd[j]),
                     "usd_full_gpu": float(o.direct_usd[j] + gpu_usd[j]) if verdict == "ok" else None,
                     "usd_margin": float(marginal[j]) if verdict == "ok" else None, "needs": needs,
                     "gpu_fits": bool(gpu_fits[j]) or model.settings.mode != "provisioned",
                     "chosen": j == chosen})
    frame = pd.DataFrame(rows)
    within = (frame["verdict"] == "ok").to_numpy()
    free = within & (frame["needs"] == "").to_numpy()
    cheaper = np.flatnonzero(within & (marginal < marginal[chosen] - 1e-9 * max(abs(marginal[chosen]), 1.0)))
    if len(cheaper) == 0:
        why = "the cheapest option within SLO at the margin"
    else:
        best = cheaper[np.argmin(marginal[cheaper])]
        blocked = frame.loc[best, "needs"]
        why = (f"{frame.loc[best, 'tier']} on {frame.loc[best, 'offering']} would cost "
               f"${marginal[chosen] - marginal[best]:,.2f} a month less but needs {blocked}"
               if blocked else "within the solver's gap of the cheapest option at the margin")
    flip = _flip(model, placement, i, chosen, free, room)
    k = int(model.context_class[i])
    return {"context": context_id, "tokens": int(model.demand.tokens[k]),
            "reuses_per_month": float(model.demand.reuses_per_month[k]),
            "ttft_slo_s": float(model.demand.ttft_slo_s[k]), "tpot_slo_s": float(model.demand.tpot_slo_s[k]),
            "chosen": {"offering": F.names[o.g[chosen]], "tier": T.names[o.t[chosen]],
                       "usd_margin": float(marginal[chosen]), "usd_in_plan": float(priced.context_usd[i])},
            "why": why, "flip": flip, "options": frame}


def _verdict(model: Model, o: Options, j: int) -> str:
    if not o.available[j]:
        return "not available" + _unavailable_reason(model, o, j)
    if o.ttft_s[j] > model.demand.ttft_slo_s[o.k[j]] * (1 + 1e-12):
        return f"TTFT {o.ttft_s[j]:.3f} s > SLO {model.demand.ttft_slo_s[o.k[j]]:g} s"
    if o.tpot_s[j] > model.demand.tpot_slo_s[o.k[j]] * (1 + 1e-12):
        return f"TPOT {o.tpot_s[j] * 1000:.1f} ms > SLO {model.demand.tpot_slo_s[o.k[j]] * 1000:g} ms"
    return "ok"


def _unavailable_reason(model: Model, o: Options, j: int) -> str:
    F, kind = model.fleet, model.tiers.kinds[o.t[j]]
    if not F.serves[o.g[j]]:
        return f" ({F.why_not(int(o.g[j]), model.workload.pricing)})"
    if o.batch[j] < 1:
        return " (no decode batch fits)"
    if kind in ("hbm", "host_memory", "local_nvme") and model.settings.mode != "provisioned":
        return " (attached tiers need rented instances)"
    if kind in ("hbm", "host_memory", "local_nvme"):
        return " (the cache does not fit, or the instance has none)"
    return " (no path to the tier)"


def _amount(value: float) -> str:
    return f"{value:,.4g}"


def margins(model: Model, placement: Placement, i: int, rates: np.ndarray, room: np.ndarray) -> np.ndarray:
    """(rates, options): each option's cost at the margin with context i reused at each rate."""
    o = _options_of(model, placement, i, rates)
    return _marginal(model, placement, o, room).reshape(len(rates), -1)


def _flip(model: Model, placement: Placement, i: int, chosen: int, free: np.ndarray, room: np.ndarray) -> dict | None:
    """The nearest reuse rate (up or down, within a factor of 10,000) at which an option that needs no change of
    fleet costs less at the margin than the choice: a crossing of two lines, or the GPUs running out of room."""
    f = float(model.demand.reuses_per_month[int(model.context_class[i])])
    free = free.copy()
    free[chosen] = False
    if not free.any():
        return None

    def beaten(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cost = margins(model, placement, i, rates, room)
        other = np.where(free, cost, np.inf)
        mine = cost[:, chosen]
        return other.min(axis=1) < mine - 1e-9 * np.maximum(np.abs(mine), 1e-9), other.argmin(axis=1)

    found = []
    start = f if f > 0 else 1e-3
    for steps in (np.geomspace(1, 1e4, 161)[1:], np.geomspace(1, 1e-4, 161)[1:]):
        rates = start * steps
        lost, _ = beaten(rates)
        if not lost.any():
            continue
        first = int(np.argmax(lost))
        near, far = (start if first == 0 else rates[first - 1]), rates[first]
        for _ in range(50):  # bisect (geometrically) down to where the choice is first beaten
            middle = np.sqrt(near * far)
            if beaten(np.array([middle]))[0][0]:
                far = middle
            else:
                near = middle
        found.append((far, int(beaten(np.array([far]))[1][0])))
    if not found:
        return None
    rate, j = min(found, key=lambda item: abs(np.log(item[0] / start)))
    T = len(model.tiers.names)
    return {"reuses_per_month": float(rate), "change": float(rate / f - 1) if f > 0 else None,
            "to": {"offering": model.fleet.names[j // T], "tier": model.tiers.names[j % T]}}


def capacity(model: Model, placement: Placement, priced: Priced, resolve: bool, solver: str = "highs",
             time_limit: float | None = 120.0) -> pd.DataFrame:
    """Per rented offering and resource: use, capacity, share; and, with `resolve`, what one more and one fewer
    instance would change (re-solving the placement on that fleet). Nodes of in-memory services: their GB."""
    F = model.fleet
    used, cap = _usage(model, placement, priced)
    rows = []
    base = priced.total
    for g in np.flatnonzero(placement.instances > 0):
        effect = {}
        if resolve:
            for step in (+1, -1):
                fleet = placement.instances.copy()
                fleet[g] += step
                total = fixed_fleet_total(model, fleet, placement.hbm_cache, solver, time_limit)
                effect[step] = None if total is None else total - base
        for r, name in enumerate(RESOURCES):
            if cap[g, r] <= 0 and used[g, r] <= 0:
                continue
            share = used[g, r] / cap[g, r] if cap[g, r] > 0 else np.inf
            rows.append({"offering": F.names[g], "instances": int(placement.instances[g]), "resource": name,
                         "used": float(used[g, r]), "capacity": float(cap[g, r]), "share": float(share),
                         "binding": bool(share >= 0.99),
                         "one_more_usd": effect.get(+1), "one_fewer_usd": effect.get(-1),
                         "instance_usd": float(F.price[g] * model.settings.hours_per_month)})
    T, o = model.tiers, priced.options
    for t in np.flatnonzero(placement.nodes > 0):  # in-memory services bought by the node
        stored = float(o.stored_gb[o.t == t].sum())
        capacity_gb = float(placement.nodes[t] * T.node_gb[t])
        rows.append({"offering": f"{T.names[t]} nodes", "instances": int(placement.nodes[t]), "resource": "gb",
                     "used": stored, "capacity": capacity_gb, "share": stored / capacity_gb,
                     "binding": bool(stored >= 0.99 * capacity_gb), "one_more_usd": None, "one_fewer_usd": None,
                     "instance_usd": float(T.node_price_per_hour[t] * model.settings.hours_per_month)})
    return pd.DataFrame(rows)


def _exact_sized(model: Model) -> None:
    if len(model.demand.count) > SCALE_CLASSES:
        raise InputError("--resolve", f"re-solving needs at most {SCALE_CLASSES:,} context classes "
                         f"(this plan has {len(model.demand.count):,})")


def fixed_fleet_total(model: Model, instances: np.ndarray, hbm: np.ndarray, solver: str = "highs",
                      time_limit: float | None = 120.0) -> float | None:
    """The cheapest plan's total on exactly this fleet (HBM-cache states fixed); None where none exists."""
    _exact_sized(model)
    if np.any(instances < 0):
        return None
    table = option_table(model)
    keep = table.allowed & ((table.c == -1) | (table.c == hbm[table.g]))
    options = drop_dominated(table.take(keep), model.tiers)
    background = background_table(model)
    bg = background.take(background.allowed & (background.c == hbm[background.g]))
    prob, var = build(problem_of(model, options, bg))
    for g, v in var["n"].items():
        v.lowBound = v.upBound = int(instances[g])
    for g, v in var["h"].items():
        v.lowBound = v.upBound = int(hbm[g])
    status, _ = solve_once(prob, solver, 1e-6, time_limit)
    if status not in ("optimal", "feasible", "time_limit"):
        return None
    import pulp
    return float(pulp.value(prob.objective))


def resolved_total(model: Model, context_id: str, offering: str, tier: str, solver: str = "highs",
                   gap: float = 1e-6, time_limit: float | None = 120.0) -> float | None:
    """The cheapest plan's total with this context forced onto (offering, tier): the rest re-optimised, fleet
    included; None where no plan exists that way."""
    _exact_sized(model)
    i = _context_index(model, context_id)
    F, T = model.fleet, model.tiers
    if offering not in F.names or tier not in T.names:
        raise InputError("--resolve", f"unknown option {tier} on {offering}")
    k = int(model.context_class[i])
    K = len(model.demand.count)
    # the context becomes a class of its own, whose only options are the forced ones
    fields = {name: np.append(getattr(model.demand, name), getattr(model.demand, name)[k])
              for name in Demand.__dataclass_fields__}
    fields["count"] = fields["count"].copy()
    fields["count"][k] -= 1
    fields["count"][K] = 1
    classes = model.context_class.copy()
    classes[i] = K
    forced = dataclasses.replace(model, demand=Demand(**fields), context_class=classes)
    table = option_table(forced)
    keep = (table.k != K) | ((table.g == F.names.index(offering)) & (table.t == T.names.index(tier)))
    placement, solution, _ = solve_restricted(forced, table, background_table(forced), keep, solver=solver, gap=gap,
                                              time_limit=time_limit)
    return None if placement is None else price(forced, placement).total
