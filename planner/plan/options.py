"""The model's inputs as arrays, and every option of every context class (MODEL.md §4, §5, §8).

`prepare` turns a workload and a catalog into the cost model's arrays: identical contexts become one class with
a count. The option table is costmodel.evaluate on every class × offering × tier × HBM-cache state, kept where
allowed and not dominated; the baselines are restrictions of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..costmodel import (
    PATH_BLOCK,
    PATH_NETWORK,
    RECOMPUTE,
    Demand,
    Fleet,
    Options,
    Settings,
    Tiers,
    build_fleet,
    build_tiers,
    evaluate,
    grid,
)
from ..inputs.catalog import Catalog, ModelCard
from ..inputs.workload import Workload
from ..solve.exact import Problem


@dataclass(frozen=True)
class Model:
    """The model's inputs as arrays: one workload on one catalog."""
    workload: Workload
    catalog: Catalog
    card: ModelCard
    fleet: Fleet
    tiers: Tiers
    settings: Settings
    demand: Demand
    context_class: np.ndarray   # class index of each context
    background: Demand
    # best-effort classes (MODEL.md §5): no option meets their SLO, so their TTFT SLO is their best TTFT (TPOT
    # free); slo_given keeps every class's SLO as stated (nan where none was changed)
    best_effort: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    slo_given: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def options(self, k, g, t, c) -> Options:
        return evaluate(self.card, self.fleet, self.tiers, self.demand, self.settings, k, g, t, c)

    def background_options(self, g, c) -> Options:
        g = np.asarray(g)
        zeros = np.zeros(len(g), dtype=np.int64)
        return evaluate(self.card, self.fleet, self.tiers, self.background, self.settings, zeros, g, zeros, c)


def prepare(workload: Workload, catalog: Catalog) -> Model:
    (demand,), context_class = demand_classes(workload)
    tiers = build_tiers(catalog)
    settings = Settings(workload.mode, workload.hours_per_month, workload.peak_to_mean,
                        hbm_cache_possible=workload.mode == "provisioned" and "hbm" in tiers.kinds)
    return Model(workload, catalog, workload.model, build_fleet(workload.model, catalog, workload.pricing), tiers,
                 settings, demand, context_class, background_demand(workload),
                 slo_given=np.full(len(demand.count), np.nan))


def best_effort(model: Model, classes: np.ndarray) -> Model:
    """The model with `classes` planned best-effort (MODEL.md §5): a class that no option serves within its SLO
    takes its fastest option (then the cheapest of those): its TTFT SLO becomes its best TTFT, its TPOT SLO none.
    Classes no option serves at all stay as they are."""
    classes = np.asarray(classes, dtype=np.int64)
    k, g, t, c = grid(len(classes), len(model.fleet.names), len(model.tiers.names))
    o = model.options(classes[k], g, t, c)
    fastest = np.full(len(classes), np.inf)
    np.minimum.at(fastest, k[o.available], o.ttft_s[o.available])
    served = np.isfinite(fastest)
    classes, fastest = classes[served], fastest[served]
    ttft, tpot = model.demand.ttft_slo_s.copy(), model.demand.tpot_slo_s.copy()
    given = model.slo_given.copy()
    given[classes] = np.where(np.isnan(given[classes]), ttft[classes], given[classes])
    ttft[classes] = np.maximum(ttft[classes], fastest * (1 + 1e-9))
    tpot[classes] = np.inf
    demand = dataclasses.replace(model.demand, ttft_slo_s=ttft, tpot_slo_s=tpot)
    return dataclasses.replace(model, demand=demand, best_effort=np.union1d(model.best_effort, classes),
                               slo_given=given)


def demand_classes(workload: Workload, reuses: np.ndarray | None = None) -> tuple[list[Demand], np.ndarray]:
    """Group contexts identical in every parameter; return the classes (one Demand per month of `reuses`, a
    contexts x months table; by default the single month of reuses_per_month) and each context's class."""
    frame = workload.contexts
    if reuses is None:
        reuses = frame["reuses_per_month"].to_numpy(float)[:, None]
    tpot_default = np.inf if workload.tpot_slo_s is None else workload.tpot_slo_s
    columns = np.column_stack([
        frame["tokens"].to_numpy(float), frame["prompt_tokens"].to_numpy(float),
        frame["output_tokens"].to_numpy(float), frame["writes_per_month"].to_numpy(float),
        frame["ttft_slo_s"].fillna(workload.ttft_slo_s).to_numpy(float),
        frame["tpot_slo_s"].fillna(tpot_default).to_numpy(float), reuses,
    ]) if len(frame) else np.zeros((0, 6 + reuses.shape[1]))
    # identical rows, in lexicographic order (np.unique(axis=0) does the same, 4x slower)
    order = np.lexsort(columns.T[::-1])
    ordered = columns[order]
    new = np.ones(len(order), bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    keys = ordered[new]
    counts = np.diff(np.append(np.flatnonzero(new), len(order)))
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.cumsum(new) - 1
    months = [Demand(
        tokens=keys[:, 0].astype(np.int64), prompt_tokens=keys[:, 1].astype(np.int64),
        output_tokens=keys[:, 2].astype(np.int64), reuses_per_month=keys[:, 6 + m], writes_per_month=keys[:, 3],
        ttft_slo_s=keys[:, 4], tpot_slo_s=keys[:, 5], count=counts.astype(np.int64),
    ) for m in range(reuses.shape[1])]
    return months, inverse


def background_demand(workload: Workload) -> Demand:
    """Background traffic as one class with no stored context (empty when there is none)."""
    t = workload.traffic
    rows = [] if t is None or t.requests_per_month == 0 else [t]
    tpot = np.inf if workload.tpot_slo_s is None else workload.tpot_slo_s
    return Demand(
        tokens=np.zeros(len(rows), np.int64),
        prompt_tokens=np.array([r.prompt_tokens for r in rows], np.int64),
        output_tokens=np.array([r.output_tokens for r in rows], np.int64),
        reuses_per_month=np.array([r.requests_per_month for r in rows], float),
        writes_per_month=np.zeros(len(rows)), ttft_slo_s=np.full(len(rows), workload.ttft_slo_s),
        tpot_slo_s=np.full(len(rows), tpot), count=np.ones(len(rows), np.int64),
    )


def option_table(model: Model) -> Options:
    """Every option of every class, with its availability and SLO verdict."""
    table = model.options(*grid(len(model.demand.count), len(model.fleet.names), len(model.tiers.names)))
    return merge_cache_states(table, model.tiers)


def merge_cache_states(table: Options, tiers: Tiers) -> Options:
    """An option whose decode batch is the same with and without an HBM cache on its offering costs the same in
    both states: keep one copy, marked c = -1, that either state may use. The grid lists c = 0, 1 in pairs."""
    plain, cached = np.arange(0, len(table.k), 2), np.arange(1, len(table.k), 2)
    same = ((table.batch[plain] == table.batch[cached]) & table.available[plain] & table.available[cached]
            & (table.meets_slo[plain] == table.meets_slo[cached])
            & (np.asarray(tiers.kinds, dtype=object)[table.t[plain]] != "hbm"))
    c = table.c.copy()
    c[plain[same]] = -1
    keep = np.ones(len(table.k), dtype=bool)
    keep[cached[same]] = False
    return dataclasses.replace(table, c=c).take(keep)


def background_table(model: Model) -> Options:
    if len(model.background.count) == 0:
        return model.background_options(np.zeros(0, np.int64), np.zeros(0, np.int64))
    g, c = np.meshgrid(np.arange(len(model.fleet.names)), np.arange(2), indexing="ij")
    return model.background_options(g.ravel(), c.ravel())


def drop_dominated(options: Options, tiers: Tiers) -> Options:
    """Among remote tiers reached over the same path, one class on one offering in one HBM state only ever
    wants the cheapest: they load the same bytes over the same path and cost the same GPU time."""
    keep = np.ones(len(options.k), dtype=bool)
    path = tiers.path[options.t]
    per_gb = ~np.isfinite(tiers.node_gb[options.t])  # node-priced tiers use their own capacity: keep them
    for kind in (PATH_NETWORK, PATH_BLOCK):
        rows = np.flatnonzero((path == kind) & per_gb)
        if len(rows) == 0:
            continue
        key = np.stack([options.k[rows], options.g[rows], options.c[rows]])
        order = np.lexsort((rows, options.direct_usd[rows], key[2], key[1], key[0]))
        sorted_key = key[:, order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = np.any(sorted_key[:, 1:] != sorted_key[:, :-1], axis=0)
        keep[rows[order[~first]]] = False
    return options.take(keep)


def problem_of(model: Model, options: Options, background: Options) -> Problem:
    """The exact program (solve.exact) over these options of the contexts and of the background traffic."""
    return Problem(options, model.demand.count, background, model.fleet, model.tiers,
                   model.workload.hours_per_month, model.workload.mode == "provisioned")


def baseline_masks(model: Model, table: Options) -> dict[str, np.ndarray]:
    """MODEL.md §8's baselines, each a restriction of the option table."""
    stored = table.t != RECOMPUTE
    masks = {"all_recompute": ~stored & (table.c != 1)}
    for t, name in enumerate(model.tiers.names[1:], start=1):
        masks[name] = table.t == t
    # Rule of thumb: store a context reused more than once per hour, recompute the others; where the rule's
    # choice has no option within SLO, the context takes the other one.
    wants_store = model.demand.reuses_per_month > model.workload.hours_per_month
    rule = stored == wants_store[table.k]
    served = np.zeros(len(model.demand.count), dtype=bool)
    served[table.k[rule & table.allowed]] = True
    masks["rule_of_thumb"] = rule | ~served[table.k]
    return masks
