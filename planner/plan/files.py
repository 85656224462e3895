"""Plan files: a priced plan as the JSON kvplan writes (plan.json), and a saved plan read back, with the inputs it
carries, to be re-priced (`kvplan evaluate`), explained or reported without a solver.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import __version__
from ..costmodel import Options
from ..inputs.catalog import Catalog, parse_catalog, parse_model
from ..inputs.errors import InputError
from ..inputs.fields import Section
from ..inputs.workload import Workload, parse_workload
from ..solve.exact import Solution
from .options import Model, best_effort, prepare
from .pricing import Placement, Priced, carrying_background, price


def _rounded(value: float, digits: int = 6) -> float:
    return float(round(float(value), digits))


def to_json(model: Model, placement: Placement, priced: Priced, solution: Solution, baselines: dict,
            notes: list[str], timing: bool = False) -> dict:
    F, T, w = model.fleet, model.tiers, model.workload
    o = priced.options
    provisioned = w.mode == "provisioned"
    G = len(F.names)
    bg_g = carrying_background(placement.background_share)
    bg_on = np.zeros(G)
    bg_on[bg_g] = 1
    carrying = np.bincount(o.g, minlength=G) + bg_on
    load = np.bincount(o.g, o.gpu_load, G) + np.bincount(bg_g, priced.background_share * priced.background.gpu_load, G)
    fleet = []
    for g in range(G):
        if placement.instances[g] == 0 and carrying[g] == 0:
            continue  # neither rented nor used (a used offering with no instance is a violation, shown)
        row = {"offering": F.offering_names[g], "tp": int(F.tp[g]), "replicas": int(F.replicas[g]),
               "instances": int(placement.instances[g]), "usd": _rounded(priced.fleet_usd[g]),
               "price_per_hour": float(F.price[g]), "gpus": int(F.gpus[g]),
               "hbm_cache": bool(placement.hbm_cache[g]), "contexts": int(np.sum(o.g == g)),
               "background_share": _rounded(placement.background_share[g])}
        if F.profile[g] >= 0:
            row["profile"] = F.profiles[F.profile[g]].label
        if provisioned:
            capacity = F.gpu_capacity[g] * placement.instances[g] / F.utilization_max[g]
            row["gpu_utilization_peak"] = _rounded(load[g] / capacity if capacity else 0.0, 4)
        fleet.append(row)
    tiers = []
    for t, name in enumerate(T.names):
        on = o.t == t
        if not on.any() and priced.node_usd[t] == 0:
            continue
        usd = o.storage_usd[on].sum() + o.network_usd[on].sum() + o.requests_usd[on].sum() + priced.node_usd[t]
        row = {"tier": name, "kind": T.kinds[t], "contexts": int(on.sum()), "gb": _rounded(o.stored_gb[on].sum()),
               "usd": _rounded(usd)}
        if np.isfinite(T.node_gb[t]):
            row["nodes"] = int(placement.nodes[t])
        tiers.append(row)
    contexts = _context_rows(model, priced)
    total = priced.total
    estimated = _estimates_used(model, placement, o)
    if estimated:
        notes.append("uses estimated catalog figures: " + ", ".join(estimated))
    notes.append("TTFT excludes queueing (held down by utilization_max); loading "
                 + ("overlaps prefill on tiers marked overlap_load" if T.overlap_load.any()
                    else "and prefill run one after the other"))
    if model.card.params_b != model.card.total_params_b:
        notes.append("decode reads only the active experts' weights: a lower bound when a batch touches more")
    notes.extend(_profile_notes(model, placement, priced))
    held = F.load_blocks_gpu[o.g] & (o.t != 0) & (o.load_s > 0)
    if held.any():
        notes.append(f"loads hold the GPU (load_blocks_gpu) on {', '.join(sorted({F.names[g] for g in o.g[held]}))}: "
                     "a stored context's load time counts as GPU time there")
    return {
        "kvplan_version": __version__,
        "model": model.card.name,
        "mode": w.mode,
        "pricing": w.pricing,
        "hours_per_month": w.hours_per_month,
        "catalog": {"name": model.catalog.name, "provider": model.catalog.provider, "region": model.catalog.region,
                    "as_of": model.catalog.as_of, "currency": model.catalog.currency},
        "total_usd": _rounded(total),
        "breakdown_usd": {key: _rounded(value) for key, value in priced.breakdown.items()},
        "fleet": fleet,
        "tiers": tiers,
        "background": {"requests_per_month": float(w.traffic.requests_per_month) if w.traffic else 0.0,
                       "usd": _rounded(priced.background_usd)},
        "contexts": contexts,
        "slo_misses": slo_misses(model, priced),
        "baselines": baselines,
        "solver": {"name": solution.solver, "status": solution.status,
                   "objective_usd": _rounded(solution.objective) if solution.objective is not None else None,
                   "lower_bound_usd": _rounded(solution.lower_bound) if solution.lower_bound is not None else None,
                   "gap": solution.gap, "seconds": round(solution.seconds, 3) if timing else None},
        "violations": priced.violations,
        "notes": notes,
        "inputs": {"files": w.inputs, "workload": w.settings(), "models": _cards(model),
                   "catalog": model.catalog.raw, "catalog_file": {model.catalog.path: model.catalog.sha256}},
    }


def _context_rows(model: Model, priced: Priced) -> list[dict]:
    o, frame = priced.options, model.workload.contexts
    d = model.demand
    k = model.context_class
    columns = {
        "id": frame["id"].tolist(),
        "tier": [model.tiers.names[t] for t in o.t.tolist()],
        "offering": [model.fleet.offering_names[g] for g in o.g.tolist()],
        "tp": model.fleet.tp[o.g].tolist(),
        "ttft_s": np.round(o.ttft_s, 6).tolist(),
        "slo_s": original_slo(model)[k].tolist(),
        "tpot_s": np.round(o.tpot_s, 6).tolist(),
        "usd": np.round(priced.context_usd, 6).tolist(),
        "gb": np.round(o.stored_gb, 6).tolist(),
        "tokens": frame["tokens"].tolist(),
        "reuses_per_month": frame["reuses_per_month"].tolist(),
        "prompt_tokens": frame["prompt_tokens"].tolist(),
        "output_tokens": frame["output_tokens"].tolist(),
        "writes_per_month": frame["writes_per_month"].tolist(),
        "ttft_slo_s": _nullable(frame["ttft_slo_s"]),
        "tpot_slo_s": _nullable(frame["tpot_slo_s"]),
    }
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def _nullable(column) -> list:
    return column.astype(object).where(column.notna(), None).tolist()


def original_slo(model: Model) -> np.ndarray:
    """Each class's TTFT SLO as the workload states it (a best-effort class plans against its best TTFT)."""
    return np.where(np.isfinite(model.slo_given), model.slo_given, model.demand.ttft_slo_s)


def slo_misses(model: Model, priced: Priced) -> list[dict]:
    """Contexts planned best-effort (MODEL.md §5): no option meets their SLO; each takes its fastest."""
    if len(model.best_effort) == 0:
        return []
    o = priced.options
    ids = model.workload.contexts["id"].to_numpy()
    slo = original_slo(model)
    rows = np.flatnonzero(np.isin(model.context_class, model.best_effort))
    return [{"id": ids[i].item() if hasattr(ids[i], "item") else ids[i], "best_ttft_s": _rounded(o.ttft_s[i]),
             "tier": model.tiers.names[o.t[i]], "offering": model.fleet.offering_names[o.g[i]],
             "tp": int(model.fleet.tp[o.g[i]]), "slo_s": float(slo[model.context_class[i]])} for i in rows]


def _profile_notes(model: Model, placement: Placement, priced: Priced) -> list[str]:
    """The measured profiles the plan's prefill and decode times come from, and where they were extrapolated."""
    F, o = model.fleet, priced.options
    used = np.union1d(np.flatnonzero(placement.instances > 0), o.g)
    profiled = sorted({int(F.profile[g]) for g in used if F.profile[g] >= 0})
    notes = []
    for j in profiled:
        prof = F.profiles[j]
        on = F.profile[o.g] == j
        beyond = int(np.sum(on & o.extrapolated))
        note = f"times on {prof.label} from its measured profile ({prof.source or 'no source given'})"
        if beyond:
            note += (f"; extrapolated past {prof.prefill_tokens[-1]:,} tokens or the measured batches for "
                     f"{beyond} context(s), along the roofline's shape")
        notes.append(note)
    return notes


def _cards(model: Model) -> list[dict]:
    cards = {model.card.name: model.card}
    for offering in model.catalog.offerings:
        if offering.calibration is not None:
            cards.setdefault(offering.calibration.model.name, offering.calibration.model)
    return [{k: v for k, v in dataclasses.asdict(card).items() if v is not None} for card in cards.values()]


def _estimates_used(model: Model, placement: Placement, o: Options) -> list[str]:
    pools = {int(g) for g in np.flatnonzero(placement.instances > 0)} | set(o.g.tolist())
    used_offerings = {int(model.fleet.offering[g]) for g in pools}
    used_tiers = set(o.t.tolist())
    gpus = {model.catalog.offerings[i].gpu.name for i in used_offerings}
    result = []
    for path in model.catalog.estimated:
        if path.startswith("offerings["):
            if int(path[len("offerings["):path.index("]")]) not in used_offerings:
                continue
            path = f"{model.catalog.offerings[int(path[10:path.index(']')])].name}.{path.split('.', 1)[1]}"
        elif path.startswith("tiers["):
            index = int(path[len("tiers["):path.index("]")]) + 1
            if index not in used_tiers:
                continue
            path = f"{model.tiers.names[index]}.{path.split('.', 1)[1]}"
        elif path.startswith("gpus.") and path.split(".")[1] not in gpus:
            continue
        result.append(path)
    return result


def saved_inputs(plan: dict, source: str) -> tuple[Workload, Catalog]:
    """The workload (its contexts included) and catalog a saved plan carries."""
    if not isinstance(plan, dict) or "inputs" not in plan:
        raise InputError(source, "not a kvplan plan (no 'inputs' key)")
    inputs = Section(plan, source).section("inputs")
    models = {}
    for card_section in inputs.sections("models"):
        card = parse_model(card_section)
        models[card.name] = card
    catalog = parse_catalog(inputs.raw("catalog"), f"{source}: inputs.catalog", models)
    settings = dict(inputs.section("workload").data)
    keep = ("id", "tokens", "reuses_per_month", "prompt_tokens", "output_tokens", "writes_per_month",
            "ttft_slo_s", "tpot_slo_s")
    rows = Section(plan, source).sections("contexts", [])
    settings["contexts"] = [{key: row.data.get(key) for key in keep} for row in rows]
    return parse_workload(settings, source, models, base_dir=None, path="inputs.workload"), catalog


def reprice(plan: dict, source: str) -> tuple[Model, Priced]:
    """Re-price a saved plan with the analytical model alone (no solver), from the inputs it carries. Under the
    best-effort SLO policy, a context no option serves within its SLO is held to its fastest option instead."""
    model = prepare(*saved_inputs(plan, source))
    placement = saved_placement(plan, source, model)
    priced = price(model, placement)
    if model.workload.slo_policy == "best_effort":
        missing = np.unique(model.context_class[priced.options.available & ~priced.options.meets_slo])
        if len(missing):
            model = best_effort(model, missing)
            priced = price(model, placement)
    return model, priced


def saved_placement(plan: dict, source: str, model: Model) -> Placement:
    """A saved plan's decisions, on the model of its inputs."""
    root = Section(plan, source)
    rows = root.sections("contexts", [])

    def index(names: tuple[str, ...], name: str, where: str) -> int:
        if name not in names:
            raise InputError(where, f"unknown name {name!r}")
        return names.index(name)

    G = len(model.fleet.names)

    def pool(row: Section) -> int:
        name = row.string("offering")
        tp = row.number("tp", None, positive=True, integer=True)
        try:
            return model.fleet.pool(name, tp)
        except KeyError:
            raise InputError(row.where("offering"), f"no pool {name!r}" + (f" at tp {tp}" if tp else "")
                             + " serves this plan's model in its catalog") from None

    instances, hbm, share = np.zeros(G, np.int64), np.zeros(G, np.int64), np.zeros(G)
    for row in root.sections("fleet"):
        g = pool(row)
        instances[g] = row.number("instances", integer=True)
        hbm[g] = int(row.boolean("hbm_cache", False))
        share[g] = row.number("background_share", 0.0)
    nodes = np.zeros(len(model.tiers.names), np.int64)
    for row in root.sections("tiers"):
        if row.has("nodes"):
            nodes[index(model.tiers.names, row.string("tier"), row.where("tier"))] = row.number("nodes", integer=True)
    offering = np.array([pool(r) for r in rows], np.int64)
    tier = np.array([index(model.tiers.names, r.string("tier"), r.where("tier")) for r in rows], np.int64)
    return Placement(offering, tier, instances, hbm, share, nodes)
